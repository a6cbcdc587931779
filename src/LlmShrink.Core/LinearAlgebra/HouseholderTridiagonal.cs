using System.Numerics.Tensors;

namespace LlmShrink.LinearAlgebra;

/// <summary>
/// Householder reduction of a symmetric matrix to tridiagonal form, T = QᵀAQ with Q = H₀H₁⋯H_{n−3} (Golub &amp; Van
/// Loan, 4th ed., Algorithm 8.3.1; LAPACK dsytd2). Reflector k is H_k = I − τ_k v vᵀ with v₀ = 1, and it is stored
/// in row k of the reduced matrix, columns k+1…n−1, which the later steps no longer read.
/// </summary>
static class HouseholderTridiagonal
{
    /// <summary>
    /// Reduces the full symmetric <paramref name="a"/> [n, n] in place: <paramref name="d"/> [n] and <paramref name="e"/>
    /// [n−1] receive T's diagonal and sub-diagonal, <paramref name="tau"/> [n] the reflectors' scalars.
    /// </summary>
    public static void Reduce(double[] a, int n, double[] d, double[] e, double[] tau)
    {
        var p = new double[n];
        for (int k = 0; k < n - 2; k++)
        {
            int len = n - k - 1;
            var v = a.AsSpan(k * n + k + 1, len);
            d[k] = a[k * n + k];
            tau[k] = Reflector(v, out e[k]);
            if (tau[k] == 0) continue;
            // H A' H = A' − v wᵀ − w vᵀ with p = τ A' v and w = p − (τ/2)(pᵀv) v on the trailing block A'.
            var pk = p.AsSpan(0, len);
            for (int i = 0; i < len; i++) pk[i] = tau[k] * TensorPrimitives.Dot(a.AsSpan((k + 1 + i) * n + k + 1, len), v);
            double alpha = -0.5 * tau[k] * TensorPrimitives.Dot(pk, v);
            TensorPrimitives.MultiplyAdd(v, alpha, pk, pk);
            for (int i = 0; i < len; i++)
            {
                var row = a.AsSpan((k + 1 + i) * n + k + 1, len);
                TensorPrimitives.MultiplyAdd(pk, -v[i], row, row);
                TensorPrimitives.MultiplyAdd(v, -pk[i], row, row);
            }
        }
        if (n >= 2)
        {
            d[n - 2] = a[(n - 2) * n + n - 2];
            e[n - 2] = a[(n - 1) * n + n - 2];
            tau[n - 2] = 0;
        }
        d[n - 1] = a[(n - 1) * n + n - 1];
        tau[n - 1] = 0;
    }

    /// <summary>
    /// Householder vector of x (LAPACK dlarfg): on return x holds v with v₀ = 1, and H x = β e₀ with
    /// H = I − τ v vᵀ and β = −sign(x₀)‖x‖; τ = 0 (H = I) when x already points along e₀.
    /// </summary>
    public static double Reflector(Span<double> x, out double beta)
    {
        double alpha = x[0], tailNorm = TensorPrimitives.Norm(x[1..]);
        if (tailNorm == 0)
        {
            beta = alpha;
            x[0] = 1;
            return 0;
        }
        beta = -Math.CopySign(double.Hypot(alpha, tailNorm), alpha);
        TensorPrimitives.Multiply(x[1..], 1 / (alpha - beta), x[1..]);
        x[0] = 1;
        return (beta - alpha) / beta;
    }

    /// <summary>
    /// W ← W·Qᵀ = W·H_{n−3}⋯H₀ for W [rows, n] row-major: rows that hold eigenvectors of T become eigenvectors of A.
    /// </summary>
    public static void BackTransform(double[] reduced, int n, double[] tau, double[] w, int rows)
    {
        for (int k = n - 3; k >= 0; k--)
        {
            if (tau[k] == 0) continue;
            var v = reduced.AsSpan(k * n + k + 1, n - k - 1);
            for (int r = 0; r < rows; r++)
            {
                var row = w.AsSpan(r * n + k + 1, n - k - 1);
                TensorPrimitives.MultiplyAdd(v, -tau[k] * TensorPrimitives.Dot(row, v), row, row);
            }
        }
    }
}
