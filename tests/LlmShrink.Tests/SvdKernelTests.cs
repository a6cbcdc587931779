using Xunit;
using LlmShrink.LinearAlgebra;
using static LlmShrink.Tests.LinearAlgebraTestMatrices;

namespace LlmShrink.Tests;

/// <summary>The SIMD kernels under <see cref="Svd"/> and <see cref="SymmetricEigen"/> against plain scalar loops.</summary>
public unsafe class SvdKernelTests
{
    [Theory]
    [InlineData(1, 1, 1, false, false)]
    [InlineData(133, 70, 300, false, false)]
    [InlineData(133, 70, 300, true, false)]
    [InlineData(133, 70, 300, false, true)]
    [InlineData(61, 290, 129, true, true)]
    [InlineData(300, 5, 7, false, true)]
    public void BlockedGemmMatchesScalarProduct(int m, int n, int k, bool transA, bool transB)
    {
        var a = Gaussian(m, k, seed: 1);
        var b = Gaussian(k, n, seed: 2);
        var c = Gaussian(m, n, seed: 3);
        var expected = (double[])c.Clone();
        int lda = transA ? m : k, ldb = transB ? k : n;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int p = 0; p < k; p++) s += (transA ? a[p * lda + i] : a[i * lda + p]) * (transB ? b[j * ldb + p] : b[p * ldb + j]);
                expected[i * n + j] += -0.5 * s;
            }
        fixed (double* pa = a, pb = b, pc = c)
            BlockedGemm.MultiplyAdd(pc, n, pa, lda, transA, pb, ldb, transB, m, n, k, -0.5, threads: 2);
        for (int i = 0; i < c.Length; i++)
            Assert.True(Math.Abs(c[i] - expected[i]) <= 1e-12 * Math.Sqrt(k) * 4, $"C[{i / n},{i % n}] = {c[i]} vs {expected[i]}");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void TriangularGemmProducesItsTriangle(bool lower)
    {
        var triangle = lower ? BlockedGemm.Triangle.Lower : BlockedGemm.Triangle.Upper;
        const int n = 1300, k = 9; // several tiles each way
        var a = Gaussian(n, k, seed: 5);
        var c = new double[n * n];
        fixed (double* pa = a, pc = c)
            BlockedGemm.MultiplyAdd(pc, n, pa, k, false, pa, k, true, n, n, k, 1.0, threads: 2, triangle);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
            {
                if (triangle == BlockedGemm.Triangle.Lower ? j > i : j < i) continue;
                double s = 0;
                for (int p = 0; p < k; p++) s += a[i * k + p] * a[j * k + p];
                Assert.True(Math.Abs(c[i * n + j] - s) <= 1e-12, $"C[{i},{j}] = {c[i * n + j]} vs {s}");
            }
        // The far corner of the other triangle is not touched.
        int corner = triangle == BlockedGemm.Triangle.Lower ? n - 1 : (n - 1) * n;
        Assert.Equal(0.0, c[corner]);
    }

    [Theory]
    [InlineData(1, 0, 1)]
    [InlineData(37, 0, 37)]
    [InlineData(70, 9, 41)]
    public void SymmetricColumnsMatchScalarProduct(int size, int c0, int c1)
    {
        // A symmetric S at offset (start, start) of an n×n array, stored by columns below the diagonal: (r, c) at [c·n + r].
        const int start = 3;
        int n = size + start + 2;
        var s = Gaussian(size, size, seed: size);
        var x = new double[n * n];
        for (int r = 0; r < size; r++)
            for (int c = 0; c <= r; c++) x[(start + c) * n + start + r] = s[r * size + c];
        var v = Gaussian(1, size, seed: 99);
        var y = new double[size];
        fixed (double* px = x, pv = v, py = y) HouseholderTridiagonal.SymmetricColumns(px, n, start, size, pv, py, c0, c1);
        var expected = new double[size];
        for (int c = c0; c < c1; c++)
            for (int r = c; r < size; r++)
            {
                double entry = s[r * size + c];
                expected[r] += entry * v[c];
                if (r > c) expected[c] += entry * v[r];
            }
        for (int i = 0; i < size; i++) Assert.True(Math.Abs(y[i] - expected[i]) <= 1e-12, $"y[{i}] = {y[i]} vs {expected[i]}");
    }

    [Theory]
    [InlineData(70)]
    [InlineData(64)]
    [InlineData(5)]
    public void RotationLogMatchesScalarRotations(int n)
    {
        var w = Gaussian(n, n, seed: n);
        var expected = (double[])w.Clone();
        var rng = new Random(n);
        var log = new RotationLog(w, n, threads: 2);
        for (int sweep = 0; sweep < 40; sweep++)
        {
            int lo = rng.Next(n - 1), hi = lo + 1 + rng.Next(n - 1 - lo);
            log.Sweep(lo, hi);
            for (int k = lo; k < hi; k++)
            {
                double angle = rng.NextDouble() * 2 * Math.PI, c = Math.Cos(angle), s = Math.Sin(angle);
                log.Record(c, s);
                for (int j = 0; j < n; j++)
                {
                    double p = expected[k * n + j], q = expected[(k + 1) * n + j];
                    expected[k * n + j] = c * p + s * q;
                    expected[(k + 1) * n + j] = c * q - s * p;
                }
            }
        }
        log.Flush();
        for (int i = 0; i < w.Length; i++) Assert.True(Math.Abs(w[i] - expected[i]) <= 1e-12, $"W[{i / n},{i % n}] = {w[i]} vs {expected[i]}");
    }
}
