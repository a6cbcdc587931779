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

        double plain = Error(SmoothQuant.Linear(SmoothQuant.QuantizeRows(x, Tokens, Columns), SmoothQuant.QuantizeRows(w, Rows, Columns)));
        var s = SmoothQuant.SmoothingScales(SmoothQuant.ActivationAbsMax(x, Tokens, Columns), [(w, Rows)], Columns);
        var xs = (float[])x.Clone();
        var ws = (float[])w.Clone();
        SmoothQuant.DivideActivations(xs, Tokens, Columns, s);
        SmoothQuant.ScaleWeightColumns(ws, Rows, Columns, s);
        double smoothed = Error(SmoothQuant.Linear(SmoothQuant.QuantizeRows(xs, Tokens, Columns), SmoothQuant.QuantizeRows(ws, Rows, Columns)));
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

    [Theory]
    [InlineData(5, 7, 100)]
    [InlineData(16, 32, 512)]
    [InlineData(3, 9, 31)]
    public void Int8MatmulPathsAreExact(int m, int n, int k)
    {
        var rng = new Random(m * n * k);
        var a = new sbyte[m * k];
        var b = new sbyte[n * k];
        for (int i = 0; i < a.Length; i++) a[i] = (sbyte)rng.Next(-128, 128);
        for (int i = 0; i < b.Length; i++) b[i] = (sbyte)rng.Next(-128, 128);
        a[0] = -128; b[0] = -128; // the extreme product
        var expected = new int[m * n];
        Int8Matmul.MultiplyScalar(a, b, expected, m, n, k);
        Assert.Equal(Enumerable.Range(0, k).Sum(kk => a[kk] * b[kk]), expected[0]);
        var c = new int[m * n];
        Int8Matmul.Multiply(a, b, c, m, n, k);
        Assert.Equal(expected, c);
        if (AvxVnni.IsSupported)
        {
            Array.Clear(c);
            Int8Matmul.MultiplyVnni(a, b, c, m, n, k);
            Assert.Equal(expected, c);
        }
        if (Avx512BW.IsSupported)
        {
            Array.Clear(c);
            Int8Matmul.MultiplyAvx512(a, b, c, m, n, k);
            Assert.Equal(expected, c);
        }
    }
}
