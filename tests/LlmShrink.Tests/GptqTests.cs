using LlmShrink.Compression.Quantization;
using Xunit;
using LlmShrink.LinearAlgebra;

namespace LlmShrink.Tests;

public class GptqTests
{
    const int Rows = 256, Columns = 512, Tokens = 1024;
    static readonly float[] W = QuantizationTestData.Weights(Rows, Columns, seed: 11);
    static readonly float[] X = QuantizationTestData.Activations(Tokens, Columns, seed: 12);
    static readonly double[] H = Hessian(X, Tokens, Columns);

    static double[] Hessian(float[] x, int tokens, int columns)
    {
        var acc = new HessianAccumulator(columns);
        acc.Add(x, tokens);
        return acc.ToHessian();
    }

    static double Error(QuantizedMatrix q) =>
        QuantizationTestData.OutputError(X, Tokens, W, q.Dequantize(), Rows, Columns);

    [Theory]
    [InlineData(4, 128, false, false)]
    [InlineData(4, 64, true, false)]
    [InlineData(3, 128, false, false)]
    [InlineData(3, 64, true, false)]
    [InlineData(2, 128, false, false)]
    [InlineData(2, 64, true, true)]
    [InlineData(4, 128, true, true)]
    public void OutputErrorIsBelowRtn(int bits, int groupSize, bool actOrder, bool staticGroups)
    {
        var scheme = QuantScheme.Grouped(bits, groupSize, symmetric: bits != 2);
        double rtn = Error(Rtn.Quantize(W, Rows, Columns, scheme));
        var gptq = Gptq.Quantize(W, Rows, Columns, H, scheme, new GptqOptions(ActOrder: actOrder, StaticGroups: staticGroups));
        double error = Error(gptq);
        Assert.True(error < 0.8 * rtn, $"GPTQ {error} vs RTN {rtn}");
    }

    [Fact]
    public void PerChannelOutputErrorIsBelowRtn()
    {
        var scheme = new QuantScheme(4, false, QuantGranularity.PerChannel);
        double rtn = Error(Rtn.Quantize(W, Rows, Columns, scheme));
        double gptq = Error(Gptq.Quantize(W, Rows, Columns, H, scheme, new GptqOptions(ActOrder: true)));
        Assert.True(gptq < 0.8 * rtn, $"GPTQ {gptq} vs RTN {rtn}");
    }

    [Theory]
    [InlineData(4, false)]
    [InlineData(3, true)]
    public void IdentityHessianGivesRtn(int bits, bool actOrder)
    {
        // With H = I, U is diagonal: no error is propagated, so every weight is simply rounded.
        var identity = new double[Columns * Columns];
        for (int i = 0; i < Columns; i++) identity[i * Columns + i] = 1;
        var scheme = QuantScheme.Grouped(bits, 128, symmetric: false);
        var rtn = Rtn.Quantize(W, Rows, Columns, scheme);
        var gptq = Gptq.Quantize(W, Rows, Columns, identity, scheme, new GptqOptions(ActOrder: actOrder));
        Assert.Equal(rtn.Codes, gptq.Codes);
        Assert.Equal(rtn.Scales, gptq.Scales);
        Assert.Equal(rtn.Zeros, gptq.Zeros);
        Assert.Equal(rtn.GroupIndex, gptq.GroupIndex);
    }

    [Fact]
    public void ActOrderMapsGroupsBackToColumns()
    {
        var scheme = QuantScheme.Grouped(4, 64, symmetric: true);
        var q = Gptq.Quantize(W, Rows, Columns, H, scheme, new GptqOptions(ActOrder: true));
        // The most active channels (5 and 130, scaled 20×) are quantized first, so they fall in group 0.
        Assert.Equal(0, q.GroupIndex[5]);
        Assert.Equal(0, q.GroupIndex[130]);
        for (int g = 0; g < q.GroupCount; g++) Assert.Equal(64, q.GroupIndex.Count(x => x == g));
        Assert.NotEqual(Enumerable.Range(0, Columns).Select(c => c / 64), q.GroupIndex);
        var roundTrip = GptqPacking.Unpack(GptqPacking.Pack(q), scheme);
        Assert.Equal(q.Dequantize(), roundTrip.Dequantize());

        var staticGroups = Gptq.Quantize(W, Rows, Columns, H, scheme, new GptqOptions(ActOrder: true, StaticGroups: true));
        Assert.Equal(Enumerable.Range(0, Columns).Select(c => c / 64), staticGroups.GroupIndex);
    }

    [Fact]
    public void DeadInputsAreZeroed()
    {
        const int columns = 128, rows = 32;
        var x = QuantizationTestData.Activations(256, columns, seed: 13);
        for (int t = 0; t < 256; t++) x[t * columns + 9] = 0;
        var w = QuantizationTestData.Weights(rows, columns, seed: 14);
        var q = Gptq.Quantize(w, rows, columns, Hessian(x, 256, columns), QuantScheme.Grouped(4, 32, symmetric: false));
        var wHat = q.Dequantize();
        for (int r = 0; r < rows; r++) Assert.Equal(0f, wHat[r * columns + 9]);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ConsumingTheHessianGivesTheSameCodesAndQuantizeLeavesHUnchanged(bool actOrder)
    {
        var scheme = QuantScheme.Grouped(4, 64, symmetric: false);
        var options = new GptqOptions(ActOrder: actOrder);
        var original = (double[])H.Clone();
        var copied = Gptq.Quantize(W, Rows, Columns, H, scheme, options);
        Assert.Equal(original, H);
        var consumed = Gptq.QuantizeConsumingHessian(W, Rows, Columns, (double[])H.Clone(), scheme, options);
        Assert.Equal(copied.Codes, consumed.Codes);
        Assert.Equal(copied.GroupIndex, consumed.GroupIndex);
        Assert.Equal(copied.Dequantize(), consumed.Dequantize());
    }
}
