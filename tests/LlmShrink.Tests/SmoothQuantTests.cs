using System.Runtime.Intrinsics.X86;
using LlmShrink.Compression.Quantization;
using Xunit;

namespace LlmShrink.Tests;

public class SmoothQuantTests
{
    const int Columns = 256, Tokens = 64, Rows = 96;

    static float[] Product(float[] x, float[] w, int tokens, int rows, int columns)
    {
        var y = new float[tokens * rows];
        for (int t = 0; t < tokens; t++)
            for (int o = 0; o < rows; o++)
            {
                double s = 0;
                for (int c = 0; c < columns; c++) s += (double)x[t * columns + c] * w[o * columns + c];
                y[t * rows + o] = (float)s;
            }
        return y;
    }

    [Fact]
    public void SmoothingPreservesTheProduct()
    {
        var x = QuantizationTestData.Activations(Tokens, Columns, seed: 31);
        var w = QuantizationTestData.Weights(Rows, Columns, seed: 32);
        var w2 = QuantizationTestData.Weights(16, Columns, seed: 33);
        var s = SmoothQuant.SmoothingScales(SmoothQuant.ActivationAbsMax(x, Tokens, Columns), [(w, Rows), (w2, 16)], Columns);
        var before = Product(x, w, Tokens, Rows, Columns);
        var xs = (float[])x.Clone();
        var ws = (float[])w.Clone();
        SmoothQuant.DivideActivations(xs, Tokens, Columns, s);
        SmoothQuant.ScaleWeightColumns(ws, Rows, Columns, s);
        var after = Product(xs, ws, Tokens, Rows, Columns);
        for (int k = 0; k < before.Length; k++) Assert.Equal(before[k], after[k], 1e-4f);
        // The outlier channel 5 (20× larger activations) gets a large smoothing factor.
        Assert.True(s[5] > 3 * s[6], $"s5={s[5]} s6={s[6]}");
    }

    [Fact]
    public void ScalesFollowTheFormula()
    {
        float[] w = [1f, -4f, 0.25f, 9f]; // one row, 4 columns
        var s = SmoothQuant.SmoothingScales([4f, 1f, 16f, 0f], [(w, 1)], 4, alpha: 0.5);
        Assert.Equal(new[] { 2f, 0.5f, 8f, MathF.Round((float)(Math.Sqrt(1e-5) / 3), 6) }, s.Select(v => MathF.Round(v, 6)).ToArray());
    }

    [Fact]
    public void SmoothedInt8LinearIsCloserThanUnsmoothed()
    {
        var x = QuantizationTestData.Activations(Tokens, Columns, seed: 34);
        var w = QuantizationTestData.Weights(Rows, Columns, seed: 35);
        var exact = Product(x, w, Tokens, Rows, Columns);
        double Error(float[] y) => exact.Zip(y, (a, b) => (double)(a - b) * (a - b)).Sum();

        double plain = Error(Int8Linear(SmoothQuant.QuantizeRows(x, Tokens, Columns), SmoothQuant.QuantizeRows(w, Rows, Columns)));
        var s = SmoothQuant.SmoothingScales(SmoothQuant.ActivationAbsMax(x, Tokens, Columns), [(w, Rows)], Columns);
        var xs = (float[])x.Clone();
        var ws = (float[])w.Clone();
        SmoothQuant.DivideActivations(xs, Tokens, Columns, s);
        SmoothQuant.ScaleWeightColumns(ws, Rows, Columns, s);
        double smoothed = Error(Int8Linear(SmoothQuant.QuantizeRows(xs, Tokens, Columns), SmoothQuant.QuantizeRows(ws, Rows, Columns)));
        Assert.True(smoothed < 0.7 * plain, $"smoothed {smoothed} vs plain {plain}");
    }

    [Fact]
    public void PerRowInt8UsesTheFullRange()
    {
        var q = SmoothQuant.QuantizeRows([0.5f, -1.27f, 0.01f, 0f, 0f, 0f], 2, 3);
        Assert.Equal(new sbyte[] { 50, -127, 1, 0, 0, 0 }, q.Values);
        Assert.Equal(0.01f, q.Scales[0], 1e-7f);
        Assert.Equal(1f, q.Scales[1]);
    }

    /// <summary>Y [tokens, out] = X Wᵀ from int8 activations (per token) and int8 weights (per output channel), in plain loops.</summary>
    private static float[] Int8Linear(Int8Rows activations, Int8Rows weights)
    {
        int m = activations.Rows, n = weights.Rows, k = activations.Columns;
        var y = new float[m * n];
        for (int t = 0; t < m; t++)
            for (int o = 0; o < n; o++)
            {
                int acc = 0;
                for (int j = 0; j < k; j++) acc += activations.Values[t * k + j] * weights.Values[o * k + j];
                y[t * n + o] = acc * activations.Scales[t] * weights.Scales[o];
            }
        return y;
    }
}
