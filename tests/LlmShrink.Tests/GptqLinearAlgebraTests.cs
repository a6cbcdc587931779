using LlmShrink.Compression.Quantization;
using Xunit;
using LlmShrink.LinearAlgebra;

namespace LlmShrink.Tests;

public class GptqLinearAlgebraTests
{
    static double[] SymmetricPositiveDefinite(int n, int seed)
    {
        var x = QuantizationTestData.Activations(2 * n, n, seed);
        var acc = new HessianAccumulator(n);
        acc.Add(x, 2 * n);
        var h = acc.ToHessian();
        double mean = Enumerable.Range(0, n).Average(i => h[i * n + i]);
        for (int i = 0; i < n; i++) h[i * n + i] += 0.01 * mean;
        return h;
    }

    /// <summary>Textbook Cholesky–Banachiewicz, one element at a time.</summary>
    static double[] ScalarCholesky(double[] a, int n)
    {
        var l = new double[n * n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j <= i; j++)
            {
                double s = a[i * n + j];
                for (int k = 0; k < j; k++) s -= l[i * n + k] * l[j * n + k];
                l[i * n + j] = i == j ? Math.Sqrt(s) : s / l[j * n + j];
            }
        return l;
    }

    [Theory]
    [InlineData(37)]
    [InlineData(300)]
    public void BlockedCholeskyMatchesScalar(int n)
    {
        var h = SymmetricPositiveDefinite(n, seed: n);
        var expected = ScalarCholesky(h, n);
        var l = (double[])h.Clone();
        Cholesky.FactorLower(l, n);
        for (int k = 0; k < l.Length; k++)
            Assert.True(Math.Abs(l[k] - expected[k]) <= 1e-9 * (1 + Math.Abs(expected[k])), $"L[{k / n},{k % n}] = {l[k]} vs {expected[k]}");
    }

    [Theory]
    [InlineData(45)]
    [InlineData(290)]
    public void InverseUpperFactorGivesTheInverse(int n)
    {
        var h = SymmetricPositiveDefinite(n, seed: 7 * n);
        var u = Cholesky.InverseUpperFactor(h, n);
        for (int i = 0; i < n; i++)
        {
            Assert.True(u[i * n + i] > 0);
            for (int j = 0; j < i; j++) Assert.Equal(0.0, u[i * n + j]);
        }
        // (UᵀU) H = I
        var uu = new double[n * n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int k = 0; k <= Math.Min(i, j); k++) s += u[k * n + i] * u[k * n + j];
                uu[i * n + j] = s;
            }
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int k = 0; k < n; k++) s += uu[i * n + k] * h[k * n + j];
                Assert.True(Math.Abs(s - (i == j ? 1 : 0)) < 1e-7, $"(H⁻¹H)[{i},{j}] = {s}");
            }
    }

    [Fact]
    public void IndefiniteMatrixIsReported()
    {
        var a = new double[] { 1, 2, 2, 1 };
        Assert.Throws<ShrinkException>(() => Cholesky.FactorLower(a, 2));
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(7, 70, 13)]
    [InlineData(64, 128, 128)]
    [InlineData(33, 200, 300)]
    public void GemmKernelsMatchNaiveProduct(int m, int n, int k)
    {
        var rng = new Random(m * 1000 + n);
        var a = QuantizationTestData.Gaussian(rng, m * k);
        var b = QuantizationTestData.Gaussian(rng, k * n);
        var c = QuantizationTestData.Gaussian(rng, m * n);
        var cf = (float[])c.Clone();
        var cd = c.Select(v => (double)v).ToArray();
        DenseKernels.MultiplyAdd<float>(cf, n, a, k, b, n, m, n, k);
        DenseKernels.MultiplyAdd<double>(cd, n, a.Select(v => (double)v).ToArray(), k, b.Select(v => (double)v).ToArray(), n, m, n, k);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double s = c[i * n + j];
                for (int kk = 0; kk < k; kk++) s += (double)a[i * k + kk] * b[kk * n + j];
                Assert.True(Math.Abs(cd[i * n + j] - s) < 1e-9, $"double C[{i},{j}]");
                Assert.True(Math.Abs(cf[i * n + j] - s) < 1e-4 * Math.Sqrt(k), $"float C[{i},{j}] = {cf[i * n + j]} vs {s}");
            }
    }
}
