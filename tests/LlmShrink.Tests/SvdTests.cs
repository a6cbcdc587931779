using MathNet.Numerics.LinearAlgebra;
using Xunit;
using LlmShrink.LinearAlgebra;
using static LlmShrink.Tests.LinearAlgebraTestMatrices;

namespace LlmShrink.Tests;

public class SvdTests
{
    static ThinSvd Reference(double[] a, int rows, int columns)
    {
        var svd = Matrix<double>.Build.DenseOfRowMajor(rows, columns, a).Svd(computeVectors: true);
        int k = Math.Min(rows, columns);
        return new ThinSvd(rows, columns, svd.S.ToArray(), RowMajor(svd.U.SubMatrix(0, rows, 0, k)), RowMajor(svd.VT.SubMatrix(0, k, 0, columns)));
    }

    /// <summary>The shape, ordering, reconstruction and orthogonality checks every decomposition must pass.</summary>
    static void AssertValidDecomposition(ThinSvd svd, double[] a, int rows, int columns, double tolerance)
    {
        int k = Math.Min(rows, columns);
        Assert.Equal((rows, columns, k), (svd.Rows, svd.Columns, svd.Rank));
        Assert.Equal(rows * k, svd.U.Length);
        Assert.Equal(k * columns, svd.Vt.Length);
        for (int i = 0; i < k; i++)
        {
            Assert.True(svd.S[i] >= 0, $"S[{i}] = {svd.S[i]} is negative");
            if (i > 0) Assert.True(svd.S[i] <= svd.S[i - 1], $"S[{i}] = {svd.S[i]} > S[{i - 1}] = {svd.S[i - 1]}");
        }
        double norm = Math.Sqrt(a.Sum(x => x * x)), residual = 0;
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < columns; j++)
            {
                double s = a[i * columns + j];
                for (int t = 0; t < k; t++) s -= svd.U[i * k + t] * svd.S[t] * svd.Vt[t * columns + j];
                residual += s * s;
            }
        Assert.True(Math.Sqrt(residual) <= tolerance * Math.Max(norm, 1e-300), $"‖A − USVᵀ‖ = {Math.Sqrt(residual):E3}, ‖A‖ = {norm:E3}");
        AssertOrthonormalColumns(svd.U, rows, k, tolerance, "U");
        AssertOrthonormalColumns(Transpose(svd.Vt, k, columns), columns, k, tolerance, "V");
    }

    static void AssertOrthonormalColumns(double[] q, int rows, int k, double tolerance, string name)
    {
        for (int p = 0; p < k; p++)
            for (int r = p; r < k; r++)
            {
                double dot = 0;
                for (int i = 0; i < rows; i++) dot += q[i * k + p] * q[i * k + r];
                Assert.True(Math.Abs(dot - (p == r ? 1 : 0)) <= tolerance, $"{name}ᵀ{name}[{p},{r}] = {dot}");
            }
    }

    static double[] Transpose(double[] a, int rows, int columns)
    {
        var t = new double[a.Length];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < columns; j++) t[j * rows + i] = a[i * columns + j];
        return t;
    }

    /// <summary>|cos| of the angle between column <paramref name="t"/> of U (or row of Vt) in two decompositions.</summary>
    static double VectorAlignment(ThinSvd x, ThinSvd y, int t)
    {
        int k = x.Rank;
        double u = 0, v = 0;
        for (int i = 0; i < x.Rows; i++) u += x.U[i * k + t] * y.U[i * k + t];
        for (int j = 0; j < x.Columns; j++) v += x.Vt[t * x.Columns + j] * y.Vt[t * x.Columns + j];
        return Math.Min(Math.Abs(u), Math.Abs(v));
    }

    [Theory]
    [InlineData(1, 5)]
    [InlineData(5, 1)]
    [InlineData(7, 3)]
    [InlineData(3, 7)]
    [InlineData(64, 200)]
    [InlineData(200, 64)]
    [InlineData(300, 300)]
    public void RandomMatricesMatchMathNet(int rows, int columns)
    {
        var a = Gaussian(rows, columns, seed: rows * 1000 + columns);
        var svd = Svd.Decompose(a, rows, columns);
        AssertValidDecomposition(svd, a, rows, columns, 1e-12);
        var reference = Reference(a, rows, columns);
        for (int i = 0; i < svd.Rank; i++)
            Assert.True(Math.Abs(svd.S[i] - reference.S[i]) <= 1e-12 * reference.S[0], $"S[{i}] = {svd.S[i]} vs MathNet {reference.S[i]}");
        for (int t = 0; t < Math.Min(svd.Rank, 10); t++)
        {
            double gap = Math.Min(t > 0 ? svd.S[t - 1] - svd.S[t] : double.MaxValue, t + 1 < svd.Rank ? svd.S[t] - svd.S[t + 1] : double.MaxValue);
            if (gap < 1e-3 * svd.S[0]) continue; // a nearly repeated value's vectors are not determined
            Assert.True(1 - VectorAlignment(svd, reference, t) <= 1e-10, $"singular vectors {t} differ from MathNet's");
        }
    }

    [Theory]
    [InlineData(40, 90)]
    [InlineData(120, 80)]
    public void IllConditionedSpectrumIsAccurate(int rows, int columns)
    {
        int k = Math.Min(rows, columns);
        var sigma = Geometric(k, 1, 1e-8);
        var a = WithSingularValues(rows, columns, sigma, seed: 11 * rows);
        var svd = Svd.Decompose(a, rows, columns);
        AssertValidDecomposition(svd, a, rows, columns, 1e-12);
        var reference = Reference(a, rows, columns);
        for (int i = 0; i < k; i++)
        {
            // Every value within the backward error of a stable method, and down to 1e-7·σ₁ to several digits.
            Assert.True(Math.Abs(svd.S[i] - reference.S[i]) <= 1e-13, $"S[{i}] = {svd.S[i]:E6} vs MathNet {reference.S[i]:E6}");
            if (sigma[i] >= 1e-7)
                Assert.True(Math.Abs(svd.S[i] - sigma[i]) <= 1e-5 * sigma[i], $"S[{i}] = {svd.S[i]:E9} vs constructed {sigma[i]:E9}");
        }
        for (int t = 0; t < 5; t++) Assert.True(1 - VectorAlignment(svd, reference, t) <= 1e-10, $"singular vectors {t} differ from MathNet's");
    }

    [Theory]
    [InlineData(50, 130)]
    [InlineData(130, 50)]
    public void SpectrumWithJumpsKeepsTheVectorsOrthogonal(int rows, int columns)
    {
        // Three refinement levels (1…0.1, 1e-5…, 1e-11…) and exact zeros: every level's vectors must stay orthogonal to all others.
        var sigma = Geometric(20, 1, 0.1).Concat(Geometric(10, 1e-5, 5e-6)).Concat(Geometric(10, 1e-11, 5e-12)).ToArray();
        var a = WithSingularValues(rows, columns, sigma, seed: 31);
        var svd = Svd.Decompose(a, rows, columns);
        AssertValidDecomposition(svd, a, rows, columns, 1e-12);
        for (int i = 0; i < 30; i++) Assert.True(Math.Abs(svd.S[i] - sigma[i]) <= 1e-6 * sigma[i], $"S[{i}] = {svd.S[i]:E9} vs {sigma[i]:E9}");
        for (int i = 40; i < svd.Rank; i++) Assert.True(svd.S[i] <= 1e-14, $"S[{i}] = {svd.S[i]:E3} should be zero");
    }

    [Fact]
    public void TruncationErrorIsTheSumOfDroppedSquares()
    {
        const int rows = 60, columns = 100, k = 60;
        var a = WithSingularValues(rows, columns, Geometric(k, 10, 1e-6), seed: 5);
        var svd = Svd.Decompose(a, rows, columns);
        double total = a.Sum(x => x * x);
        foreach (int r in new[] { 1, 10, 30, 59 })
        {
            double error = 0;
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < columns; j++)
                {
                    double s = a[i * columns + j];
                    for (int t = 0; t < r; t++) s -= svd.U[i * k + t] * svd.S[t] * svd.Vt[t * columns + j];
                    error += s * s;
                }
            double dropped = svd.S.Skip(r).Sum(x => x * x);
            Assert.True(Math.Abs(error - dropped) <= 1e-9 * total, $"rank {r}: ‖A − A_r‖² = {error:E6}, Σ dropped σ² = {dropped:E6}");
        }
    }

    [Theory]
    [InlineData(30, 50, 12)]
    [InlineData(50, 30, 1)]
    public void RankDeficientMatrixHasExactZeros(int rows, int columns, int rank)
    {
        var a = WithSingularValues(rows, columns, Geometric(rank, 5, 0.5), seed: rows + rank);
        var svd = Svd.Decompose(a, rows, columns);
        AssertValidDecomposition(svd, a, rows, columns, 1e-12);
        var reference = Reference(a, rows, columns);
        for (int i = 0; i < svd.Rank; i++)
            Assert.True(Math.Abs(svd.S[i] - reference.S[i]) <= 1e-13 * reference.S[0], $"S[{i}] = {svd.S[i]:E6} vs MathNet {reference.S[i]:E6}");
        for (int i = rank; i < svd.Rank; i++) Assert.True(svd.S[i] <= 1e-13 * svd.S[0], $"S[{i}] = {svd.S[i]:E3} should be zero");
    }

    [Fact]
    public void ZeroMatrixHasOrthonormalFactors()
    {
        var a = new double[8 * 5];
        var svd = Svd.Decompose(a, 8, 5);
        Assert.All(svd.S, s => Assert.Equal(0.0, s));
        AssertValidDecomposition(svd, a, 8, 5, 1e-14);
    }

    [Fact]
    public void RepeatedSingularValuesSpanTheRightSubspaces()
    {
        const int rows = 45, columns = 70;
        var sigma = new double[] { 3, 3, 3, 2, 2, 1, 1, 1, 1, 0.5 }.Concat(Enumerable.Repeat(0.25, 35)).ToArray();
        var a = WithSingularValues(rows, columns, sigma, seed: 3);
        var svd = Svd.Decompose(a, rows, columns);
        AssertValidDecomposition(svd, a, rows, columns, 1e-12);
        for (int i = 0; i < sigma.Length; i++) Assert.True(Math.Abs(svd.S[i] - sigma[i]) <= 1e-12, $"S[{i}] = {svd.S[i]} vs {sigma[i]}");
    }

    [Theory]
    [InlineData(33, 71)]
    [InlineData(90, 20)]
    public void FloatOverloadsWidenExactly(int rows, int columns)
    {
        var a = Gaussian(rows, columns, seed: 17).Select(x => (float)x).ToArray();
        var wide = a.Select(x => (double)x).ToArray();
        var fromFloat = Svd.Decompose(a, rows, columns);
        var fromDouble = Svd.Decompose(wide, rows, columns);
        AssertValidDecomposition(fromFloat, wide, rows, columns, 1e-12);
        Assert.Equal(fromDouble.S, fromFloat.S);
        Assert.Equal(fromDouble.U, fromFloat.U);
        Assert.Equal(fromDouble.Vt, fromFloat.Vt);
        Assert.Equal(Svd.SingularValues(wide, rows, columns), Svd.SingularValues(a, rows, columns));
    }

    [Theory]
    [InlineData(64, 150)]
    [InlineData(150, 64)]
    public void SingularValuesAgreeWithTheDecomposition(int rows, int columns)
    {
        var a = WithSingularValues(rows, columns, Geometric(64, 100, 1e-7), seed: 23);
        var full = Svd.Decompose(a, rows, columns);
        var values = Svd.SingularValues(a, rows, columns, threads: 1);
        for (int i = 0; i < values.Length; i++)
            Assert.True(Math.Abs(values[i] - full.S[i]) <= 1e-13 * full.S[0], $"S[{i}] = {values[i]:E9} vs {full.S[i]:E9}");
    }

    [Fact]
    public void BadArgumentsAreRejected()
    {
        Assert.Throws<ArgumentException>(() => Svd.Decompose(new double[6], 2, 4));
        Assert.Throws<ArgumentException>(() => Svd.Decompose(new double[0], 0, 3));
        Assert.Throws<ArgumentException>(() => Svd.Decompose(new double[4], 2, 2, threads: -1));
        Assert.Throws<ArgumentException>(() => Svd.Decompose(new[] { 1.0, double.NaN, 0, 1 }, 2, 2));
        Assert.Throws<ArgumentException>(() => Svd.SingularValues(new[] { 1f, float.PositiveInfinity }, 1, 2));
        Assert.Throws<ArgumentException>(() => Svd.SingularValues(new float[3], 2, 2));
    }
}
