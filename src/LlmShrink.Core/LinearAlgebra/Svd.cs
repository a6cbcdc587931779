using System.Numerics.Tensors;

namespace LlmShrink.LinearAlgebra;

/// <summary>
/// Thin singular value decomposition A = U·diag(S)·Vᵀ (see <see cref="ThinSvd"/>), float64 throughout.
/// One-sided Jacobi (Hestenes 1958; Demmel &amp; Veselić 1992) on the rows of the shorter side: pairs of rows are
/// rotated until every pair is orthogonal, which gives singular values to high relative accuracy.
/// </summary>
public static class Svd
{
    const double Tolerance = 1e-15;
    const int MaxSweeps = 60;

    public static ThinSvd Decompose(ReadOnlySpan<double> a, int rows, int columns, int threads = 0)
    {
        MatrixArguments.Check(a, rows, columns, threads, "SVD");
        return Jacobi(a.ToArray(), rows, columns);
    }

    /// <summary>As the float64 overload; the float32 values are widened exactly and all arithmetic is float64.</summary>
    public static ThinSvd Decompose(ReadOnlySpan<float> a, int rows, int columns, int threads = 0)
    {
        MatrixArguments.Check(a, rows, columns, threads, "SVD");
        return Jacobi(Widen(a), rows, columns);
    }

    public static double[] SingularValues(ReadOnlySpan<double> a, int rows, int columns, int threads = 0) =>
        Decompose(a, rows, columns, threads).S;

    public static double[] SingularValues(ReadOnlySpan<float> a, int rows, int columns, int threads = 0) =>
        Decompose(a, rows, columns, threads).S;

    static double[] Widen(ReadOnlySpan<float> a)
    {
        var wide = new double[a.Length];
        TensorPrimitives.ConvertChecked<float, double>(a, wide);
        return wide;
    }

    static ThinSvd Jacobi(double[] a, int rows, int columns)
    {
        // Orthogonalize the rows of X = A (or Aᵀ when it is tall): J·X has orthogonal rows for an orthogonal J, so
        // X = Jᵀ·diag(‖rows‖)·(normalized rows).
        bool tall = rows > columns;
        int k = Math.Min(rows, columns), length = Math.Max(rows, columns);
        var x = tall ? Transpose(a, rows, columns) : a;
        var j = new double[k * k];
        for (int i = 0; i < k; i++) j[i * k + i] = 1;
        for (int sweep = 0; sweep < MaxSweeps; sweep++)
        {
            bool rotated = false;
            for (int p = 0; p < k - 1; p++)
                for (int q = p + 1; q < k; q++)
                {
                    var xp = x.AsSpan(p * length, length);
                    var xq = x.AsSpan(q * length, length);
                    double alpha = TensorPrimitives.Dot<double>(xp, xp), beta = TensorPrimitives.Dot<double>(xq, xq);
                    double gamma = TensorPrimitives.Dot<double>(xp, xq);
                    if (Math.Abs(gamma) <= Tolerance * Math.Sqrt(alpha * beta)) continue;
                    // The rotation that diagonalizes [α γ; γ β] (Golub & Van Loan, 4th ed., Algorithm 8.5.1).
                    double zeta = (beta - alpha) / (2 * gamma);
                    double t = Math.CopySign(1, zeta) / (Math.Abs(zeta) + Math.Sqrt(1 + zeta * zeta));
                    double c = 1 / Math.Sqrt(1 + t * t), s = c * t;
                    Rotate(xp, xq, c, s);
                    Rotate(j.AsSpan(p * k, k), j.AsSpan(q * k, k), c, s);
                    rotated = true;
                }
            if (!rotated) break;
        }

        var norms = new double[k];
        for (int i = 0; i < k; i++) norms[i] = TensorPrimitives.Norm(x.AsSpan(i * length, length));
        var order = Enumerable.Range(0, k).ToArray();
        Array.Sort(order, (p, q) => norms[q].CompareTo(norms[p]));
        var s0 = new double[k];
        var left = new double[k * k];     // rows: the singular vectors of the short side
        var right = new double[k * length]; // rows: the singular vectors of the long side
        for (int i = 0; i < k; i++)
        {
            int from = order[i];
            s0[i] = norms[from];
            j.AsSpan(from * k, k).CopyTo(left.AsSpan(i * k, k));
            if (norms[from] > 0) TensorPrimitives.Multiply(x.AsSpan(from * length, length), 1 / norms[from], right.AsSpan(i * length, length));
        }
        OrthonormalBasis.Complete(right, k, length, s0);
        // Short side: U = Jᵀ (columns = rows of `left`); long side: Vᵀ = normalized rows. Swapped when A is tall.
        return tall
            ? new ThinSvd(rows, columns, s0, Transpose(right, k, length), left)
            : new ThinSvd(rows, columns, s0, Transpose(left, k, k), right);
    }

    static void Rotate(Span<double> p, Span<double> q, double c, double s)
    {
        for (int i = 0; i < p.Length; i++)
        {
            double x = p[i], y = q[i];
            p[i] = c * x - s * y;
            q[i] = s * x + c * y;
        }
    }

    static double[] Transpose(double[] a, int rows, int columns)
    {
        var t = new double[a.Length];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < columns; j++) t[j * rows + i] = a[i * columns + j];
        return t;
    }
}
