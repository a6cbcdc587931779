using LlmShrink.Compression.Quantization;
using Xunit;

namespace LlmShrink.Tests;

public class AwqTests
{
    const int Columns = 256, Tokens = 256;
    static readonly float[] X = QuantizationTestData.Activations(Tokens, Columns, seed: 21);
    static readonly AwqLayer[] Layers =
    [
        new(QuantizationTestData.Weights(64, Columns, seed: 22), 64, SearchClipping: false),
        new(QuantizationTestData.Weights(32, Columns, seed: 23), 32),
    ];

    /// <summary>Σ_layers ‖X Wᵀ − (X/s) Ŵ'ᵀ‖² where Ŵ' is the dequantized W·diag(s).</summary>
    static double GroupOutputError(AwqResult result)
    {
        double total = 0;
        for (int l = 0; l < Layers.Length; l++)
        {
            var wHat = result.Quantized[l].Dequantize();
            for (int r = 0; r < Layers[l].Rows; r++)
                for (int c = 0; c < Columns; c++) wHat[r * Columns + c] /= result.Scales[c];
            total += QuantizationTestData.OutputError(X, Tokens, Layers[l].Weight, wHat, Layers[l].Rows, Columns);
        }
        return total;
    }

    [Theory]
    [InlineData(4, 64, false)]
    [InlineData(3, 128, false)]
    [InlineData(4, 128, true)]
    public void ChosenScalesBeatPlainRtn(int bits, int groupSize, bool symmetric)
    {
        var scheme = QuantScheme.Grouped(bits, groupSize, symmetric);
        var result = Awq.QuantizeGroup(Layers, X, Tokens, Columns, scheme);
        var magnitude = Awq.ActivationMagnitude(X, Tokens, Columns);

        var ones = Awq.ScalesFor(magnitude, 0);
        Assert.All(ones, s => Assert.Equal(1f, s));
        double rtn = Awq.GroupError(Layers, X, Tokens, Columns, ones, scheme);
        double chosen = Awq.GroupError(Layers, X, Tokens, Columns, result.Scales, scheme);
        Assert.True(chosen <= rtn, $"α={result.Alpha}: {chosen} vs RTN {rtn}");
        Assert.True(result.Alpha > 0, "the outlier channels should make scaling worthwhile");
        Assert.Equal(Awq.ScalesFor(magnitude, result.Alpha), result.Scales);

        // After clipping, the quantized, scaled layers still beat RTN of the original weights by a margin.
        double final = GroupOutputError(result);
        double rtnFinal = Layers.Sum(l => QuantizationTestData.OutputError(X, Tokens, l.Weight,
            Rtn.Quantize(l.Weight, l.Rows, Columns, scheme).Dequantize(), l.Rows, Columns));
        Assert.True(final < 0.9 * rtnFinal, $"AWQ {final} vs RTN {rtnFinal}");
    }

    [Fact]
    public void ScalesAreNormalizedAroundOne()
    {
        // s_x^0.5 = 0.2, 1, 5; sqrt(max · min) = 1
        Assert.Equal(new[] { 0.2f, 1f, 5f }, Awq.ScalesFor([0.04f, 1f, 25f], 0.5).Select(v => MathF.Round(v, 5)));
        // a dead channel is clamped to 1e-4 before normalizing: sqrt(4 · 1e-4) = 0.02
        Assert.Equal(new[] { 0.005f, 200f }, Awq.ScalesFor([0f, 4f], 1.0).Select(v => MathF.Round(v, 5)));
    }

    [Fact]
    public void ClippingNeverIncreasesTheGroupError()
    {
        var scheme = QuantScheme.Grouped(3, 64, symmetric: false);
        var w = (float[])Layers[1].Weight.Clone();
        var options = new AwqOptions();
        var limits = Awq.SearchClipping(w, 32, Columns, X, Tokens, scheme, options);
        var clipped = (float[])w.Clone();
        Awq.Clip(clipped, 32, Columns, limits, scheme);
        double before = QuantizationTestData.OutputError(X, Tokens, w, Rtn.Quantize(w, 32, Columns, scheme).Dequantize(), 32, Columns);
        double after = QuantizationTestData.OutputError(X, Tokens, w, Rtn.Quantize(clipped, 32, Columns, scheme).Dequantize(), 32, Columns);
        Assert.True(after <= before * 1.0001, $"clipped {after} vs {before}");
        Assert.Contains(limits, l => l < 0.99f * 0.02f * 10); // some group really was clipped
    }
}
