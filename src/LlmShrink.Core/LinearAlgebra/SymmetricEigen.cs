namespace LlmShrink.LinearAlgebra;

/// <summary>
/// Eigen-decomposition of a real symmetric matrix, A = Vᵀ·diag(λ)·V with the eigenvectors as the rows of V:
/// blocked Householder tridiagonalization, then the tridiagonal problem — implicit QR for values only, divide and
/// conquer for vectors — and the reflectors applied back to its eigenvectors by GEMMs (the path of LAPACK dsyevd).
/// Only the lower triangle of A is read. All arithmetic is float64.
/// </summary>
public static class SymmetricEigen
{
    /// <summary>Eigenvalues descending and eigenvectors as ROWS of a row-major n×n matrix (row i = eigenvector of value i).</summary>
    public static (double[] Values, double[] Vectors) Decompose(ReadOnlySpan<double> a, int n, int threads = 0)
    {
        var work = Prepare(a, n, threads);
        var (d, e, tau) = Reduce(work, n, MatrixArguments.Threads(threads));
        var w = new double[n * n];
        TridiagonalDivideAndConquer.Solve(d, e, n, w, MatrixArguments.Threads(threads));
        HouseholderTridiagonal.BackTransform(work, n, tau, w, n, MatrixArguments.Threads(threads));
        var order = DescendingOrder(d);
        var values = new double[n];
        var vectors = new double[n * n];
        for (int i = 0; i < n; i++)
        {
            values[i] = d[order[i]];
            w.AsSpan(order[i] * n, n).CopyTo(vectors.AsSpan(i * n, n));
        }
        return (values, vectors);
    }

    /// <summary>Eigenvalues, descending.</summary>
    public static double[] Values(ReadOnlySpan<double> a, int n, int threads = 0)
    {
        var work = Prepare(a, n, threads);
        var (d, e, _) = Reduce(work, n, MatrixArguments.Threads(threads));
        TridiagonalQr.Solve(d, e, n, null, 1);
        Array.Sort(d, (x, y) => y.CompareTo(x));
        return d;
    }

    /// <summary>
    /// Checks the arguments and returns A's lower triangle in the storage <see cref="HouseholderTridiagonal"/> reduces:
    /// element (r, c), r ≥ c, at [c·n + r].
    /// </summary>
    static double[] Prepare(ReadOnlySpan<double> a, int n, int threads)
    {
        MatrixArguments.Check(a, n, n, threads, "symmetric eigen-decomposition");
        var stored = new double[n * n];
        for (int r = 0; r < n; r++)
            for (int c = 0; c <= r; c++) stored[c * n + r] = a[r * n + c];
        return stored;
    }

    static (double[] D, double[] E, double[] Tau) Reduce(double[] a, int n, int threads)
    {
        double[] d = new double[n], e = new double[Math.Max(n - 1, 1)], tau = new double[n];
        HouseholderTridiagonal.Reduce(a, n, d, e, tau, threads);
        return (d, e, tau);
    }

    static int[] DescendingOrder(double[] values)
    {
        var order = Enumerable.Range(0, values.Length).ToArray();
        Array.Sort(order, (x, y) => values[y].CompareTo(values[x]));
        return order;
    }
}
