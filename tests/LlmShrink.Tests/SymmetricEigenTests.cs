using MathNet.Numerics.LinearAlgebra;
using MathNet.Numerics.LinearAlgebra.Factorization;
using Xunit;
using LlmShrink.LinearAlgebra;
using static LlmShrink.Tests.LinearAlgebraTestMatrices;

namespace LlmShrink.Tests;

public class SymmetricEigenTests
{
    static double[] RandomSymmetric(int n, int seed)
    {
        var g = Gaussian(n, n, seed);
        var a = new double[n * n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) a[i * n + j] = g[i * n + j] + g[j * n + i];
        return a;
    }

    /// <summary>Q·diag(values)·Qᵀ for a random orthogonal Q.</summary>
    static double[] WithEigenvalues(double[] values, int seed)
    {
        int n = values.Length;
        var q = RandomOrthonormalColumns(n, n, seed);
        return RowMajor(q * Matrix<double>.Build.DiagonalOfDiagonalArray(values) * q.Transpose());
    }

    static void AssertValid(double[] a, int n, double[] values, double[] vectors, double tolerance)
    {
        double scale = Math.Max(Math.Abs(values[0]), Math.Abs(values[n - 1]));
        for (int i = 1; i < n; i++) Assert.True(values[i] <= values[i - 1], $"λ[{i}] = {values[i]} > λ[{i - 1}]");
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
            {
                double orthogonality = 0, reconstruction = 0;
                for (int t = 0; t < n; t++)
                {
                    orthogonality += vectors[i * n + t] * vectors[j * n + t];
                    reconstruction += vectors[t * n + i] * values[t] * vectors[t * n + j];
                }
                Assert.True(Math.Abs(orthogonality - (i == j ? 1 : 0)) <= tolerance, $"V Vᵀ[{i},{j}] = {orthogonality}");
                Assert.True(Math.Abs(reconstruction - a[i * n + j]) <= tolerance * scale, $"(Vᵀ Λ V)[{i},{j}] = {reconstruction} vs {a[i * n + j]}");
            }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(5)]
    [InlineData(50)]
    [InlineData(257)]
    [InlineData(450)] // the parallel matrix-vector products of the tridiagonalization
    public void RandomSymmetricMatchesMathNet(int n)
    {
        var a = RandomSymmetric(n, seed: n);
        var (values, vectors) = SymmetricEigen.Decompose(a, n);
        AssertValid(a, n, values, vectors, 1e-12);
        var evd = Matrix<double>.Build.DenseOfRowMajor(n, n, a).Evd(Symmetricity.Symmetric);
        var reference = evd.EigenValues.Select(z => z.Real).OrderByDescending(x => x).ToArray();
        double scale = reference.Max(Math.Abs);
        for (int i = 0; i < n; i++)
            Assert.True(Math.Abs(values[i] - reference[i]) <= 1e-12 * scale, $"λ[{i}] = {values[i]} vs MathNet {reference[i]}");
        var valuesOnly = SymmetricEigen.Values(a, n);
        for (int i = 0; i < n; i++)
            Assert.True(Math.Abs(valuesOnly[i] - values[i]) <= 1e-12 * scale, $"Values()[{i}] = {valuesOnly[i]} vs Decompose {values[i]}");
    }

    [Fact]
    public void WideSpreadAndRepeatedEigenvalues()
    {
        var values = Geometric(20, 1e4, 1e-6).Concat(new double[] { -1, -1, -1, 0, 0, 2, 2 }).OrderByDescending(x => x).ToArray();
        int n = values.Length;
        var a = WithEigenvalues(values, seed: 9);
        var (computed, vectors) = SymmetricEigen.Decompose(a, n);
        AssertValid(a, n, computed, vectors, 1e-12);
        for (int i = 0; i < n; i++)
            Assert.True(Math.Abs(computed[i] - values[i]) <= 1e-12 * 1e4, $"λ[{i}] = {computed[i]} vs {values[i]}");
    }

    [Fact]
    public void OnlyTheLowerTriangleIsRead()
    {
        const int n = 31;
        var a = RandomSymmetric(n, seed: 4);
        var scribbled = (double[])a.Clone();
        for (int i = 0; i < n; i++)
            for (int j = i + 1; j < n; j++) scribbled[i * n + j] = 1e6;
        Assert.Equal(SymmetricEigen.Values(a, n), SymmetricEigen.Values(scribbled, n));
    }

    [Fact]
    public void DiagonalMatrixIsSortedDescending()
    {
        var a = new double[] { 1, 0, 0, 0, -3, 0, 0, 0, 2 };
        var (values, vectors) = SymmetricEigen.Decompose(a, 3);
        Assert.Equal(new double[] { 2, 1, -3 }, values);
        Assert.Equal(new double[] { 0, 0, 1, 1, 0, 0, 0, 1, 0 }, vectors.Select(Math.Abs));
    }

    [Fact]
    public void BadArgumentsAreRejected()
    {
        Assert.Throws<ArgumentException>(() => SymmetricEigen.Decompose(new double[5], 2));
        Assert.Throws<ArgumentException>(() => SymmetricEigen.Values(new double[0], 0));
        Assert.Throws<ArgumentException>(() => SymmetricEigen.Values(new[] { double.NaN }, 1));
        Assert.Throws<ArgumentException>(() => SymmetricEigen.Values(new double[4], 2, threads: -2));
    }
}
