using MathNet.Numerics.LinearAlgebra;

namespace LlmShrink.Tests;

/// <summary>Test matrices with known spectra for the SVD and eigensolver tests, row-major.</summary>
static class LinearAlgebraTestMatrices
{
    public static double[] Gaussian(int rows, int columns, int seed)
    {
        var rng = new Random(seed);
        var a = new double[rows * columns];
        for (int i = 0; i < a.Length; i++)
            a[i] = Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
        return a;
    }

    /// <summary>n×k with orthonormal columns: the Q of a Gaussian matrix's QR factorization.</summary>
    public static Matrix<double> RandomOrthonormalColumns(int n, int k, int seed) =>
        Matrix<double>.Build.DenseOfRowMajor(n, k, Gaussian(n, k, seed)).QR().Q.SubMatrix(0, n, 0, k);

    /// <summary>A = P·diag(s)·Qᵀ for random orthonormal P [rows, k], Q [columns, k], k = s.Length.</summary>
    public static double[] WithSingularValues(int rows, int columns, double[] s, int seed)
    {
        var p = RandomOrthonormalColumns(rows, s.Length, seed);
        var q = RandomOrthonormalColumns(columns, s.Length, seed + 1);
        var a = p * Matrix<double>.Build.DiagonalOfDiagonalArray(s) * q.Transpose();
        return RowMajor(a);
    }

    public static double[] RowMajor(Matrix<double> m)
    {
        var a = new double[m.RowCount * m.ColumnCount];
        for (int i = 0; i < m.RowCount; i++)
            for (int j = 0; j < m.ColumnCount; j++) a[i * m.ColumnCount + j] = m[i, j];
        return a;
    }

    /// <summary>count values spread geometrically from <paramref name="largest"/> down to <paramref name="smallest"/>.</summary>
    public static double[] Geometric(int count, double largest, double smallest) =>
        Enumerable.Range(0, count).Select(i => largest * Math.Pow(smallest / largest, count == 1 ? 0 : i / (double)(count - 1))).ToArray();
}
