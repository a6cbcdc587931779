namespace LlmShrink.LinearAlgebra;

/// <summary>
/// Eigen-decomposition of a real symmetric matrix, A = Vᵀ·diag(λ)·V with the eigenvectors as the rows of V:
/// Householder tridiagonalization, the tridiagonal problem, and the reflectors applied back to its eigenvectors
/// (the path of LAPACK dsyev). Only the lower triangle of A is read. All arithmetic is float64.
/// </summary>
public static class SymmetricEigen
{
    /// <summary>Eigenvalues descending and eigenvectors as ROWS of a row-major n×n matrix (row i = eigenvector of value i).</summary>
    public static (double[] Values, double[] Vectors) Decompose(ReadOnlySpan<double> a, int n, int threads = 0)
    {
        var work = Prepare(a, n, threads);
        var (d, e, tau) = Reduce(work, n);
        var w = new double[n * n];
        for (int i = 0; i < n; i++) w[i * n + i] = 1;
        TridiagonalQr.Solve(d, e, n, w);
        HouseholderTridiagonal.BackTransform(work, n, tau, w, n);
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
        var (d, e, _) = Reduce(work, n);
        TridiagonalQr.Solve(d, e, n, null);
        Array.Sort(d, (x, y) => y.CompareTo(x));
        return d;
    }

    /// <summary>Checks the arguments and returns the full symmetric matrix mirrored from A's lower triangle.</summary>
    static double[] Prepare(ReadOnlySpan<double> a, int n, int threads)
    {
        MatrixArguments.Check(a, n, n, threads, "symmetric eigen-decomposition");
        var full = a.ToArray();
        for (int i = 0; i < n; i++)
            for (int j = 0; j < i; j++) full[j * n + i] = full[i * n + j];
        return full;
    }

    static (double[] D, double[] E, double[] Tau) Reduce(double[] a, int n)
    {
        double[] d = new double[n], e = new double[Math.Max(n - 1, 1)], tau = new double[n];
        HouseholderTridiagonal.Reduce(a, n, d, e, tau);
        return (d, e, tau);
    }

    static int[] DescendingOrder(double[] values)
    {
        var order = Enumerable.Range(0, values.Length).ToArray();
        Array.Sort(order, (x, y) => values[y].CompareTo(values[x]));
        return order;
    }
}
