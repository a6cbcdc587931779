using LlmShrink.Compression.Quantization;
using Xunit;

namespace LlmShrink.Tests;

public class QuantizationRtnTests
{
    public static TheoryData<int, bool, QuantGranularity, int> Schemes() => new()
    {
        { 4, true, QuantGranularity.PerGroup, 128 },
        { 4, false, QuantGranularity.PerGroup, 64 },
        { 3, false, QuantGranularity.PerGroup, 32 },
        { 2, true, QuantGranularity.PerChannel, 0 },
        { 8, true, QuantGranularity.PerTensor, 0 },
        { 8, false, QuantGranularity.PerChannel, 0 },
    };

    [Theory]
    [MemberData(nameof(Schemes))]
    public void ErrorIsAtMostHalfAStepInsideTheGrid(int bits, bool symmetric, QuantGranularity granularity, int groupSize)
    {
        const int rows = 64, columns = 256;
        var scheme = new QuantScheme(bits, symmetric, granularity, groupSize);
        var w = QuantizationTestData.Weights(rows, columns, seed: 1);
        var q = Rtn.Quantize(w, rows, columns, scheme);
        var wHat = q.Dequantize();
        int checkedValues = 0;
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
            {
                var grid = q.Grid(q.GroupIndex[c], r);
                float lo = grid.Value(0), hi = grid.Value(grid.MaxCode), value = w[r * columns + c];
                Assert.InRange(wHat[r * columns + c], lo, hi);
                if (value < lo || value > hi) continue; // clipped by the float16 rounding of the scale
                Assert.True(MathF.Abs(value - wHat[r * columns + c]) <= grid.Scale / 2 * (1 + 1e-5f),
                    $"w={value} ŵ={wHat[r * columns + c]} scale={grid.Scale}");
                checkedValues++;
            }
        Assert.True(checkedValues > rows * columns * 0.95);
    }

    [Fact]
    public void GridFollowsGptqFindParams()
    {
        var asym = QuantGrid.Fit(-0.5f, 1.0f, bits: 4, symmetric: false);
        Assert.Equal((float)(Half)(1.5f / 15), asym.Scale);
        Assert.Equal(5, asym.Zero); // round(0.5 / 0.1)
        var sym = QuantGrid.Fit(-0.3f, 0.75f, bits: 4, symmetric: true);
        Assert.Equal((float)(Half)(1.5f / 15), sym.Scale);
        Assert.Equal(8, sym.Zero);
        var positive = QuantGrid.Fit(0.2f, 0.6f, bits: 3, symmetric: false); // range widened to contain 0
        Assert.Equal(0, positive.Zero);
        Assert.Equal(0f, positive.Quantize(0f));
        var empty = QuantGrid.Fit(0f, 0f, bits: 2, symmetric: false);
        Assert.Equal((float)(Half)(2f / 3), empty.Scale);
        Assert.Throws<ShrinkException>(() => new QuantScheme(5, true, QuantGranularity.PerChannel));
        Assert.Throws<ShrinkException>(() => QuantScheme.Grouped(4, 100, symmetric: true));
    }

    [Fact]
    public void PerGroupBeatsPerChannelOnOutlierColumns()
    {
        const int rows = 64, columns = 256;
        var w = QuantizationTestData.Weights(rows, columns, seed: 2);
        double Err(QuantScheme s) => w.Zip(Rtn.Quantize(w, rows, columns, s).Dequantize(), (a, b) => (double)(a - b) * (a - b)).Sum();
        Assert.True(Err(QuantScheme.Grouped(4, 32, false)) < Err(new QuantScheme(4, false, QuantGranularity.PerChannel)));
    }
}
