using LlmShrink.LinearAlgebra;

namespace LlmShrink.Analysis;

/// <summary>
/// The singular values of A [rows, columns] without its singular vectors, as σᵢ = √λᵢ(G) for the Gram matrix of its
/// shorter side, G = A·Aᵀ or Aᵀ·A [k, k], k = min(rows, columns): one GEMM and a symmetric eigenvalue problem
/// (tridiagonalization and QR on the values only). An analysis reads spectra as energies σᵢ², which is exactly what
/// G's eigenvalues are, so it needs neither the vectors nor the tail refinement of <see cref="Svd"/> (measured on a
/// 2048×2048 matrix when Svd was still a one-sided Jacobi SVD: 3.5 s here against 197 s).
/// The price is squaring: λ is accurate to about ε·λ₁ (ε = 2⁻⁵²), so σ below ~1e-7·σ₁ is not resolved (such a
/// direction holds under 1e-14 of the energy); a λ that rounding left slightly negative is taken as 0.
/// </summary>
public static class GramSpectrum
{
    /// <summary>σ of A (row-major [rows, columns]), descending, k = min(rows, columns) values.</summary>
    public static unsafe double[] SingularValues(double[] a, int rows, int columns, int threads = 0)
    {
        if (rows <= 0 || columns <= 0 || a.Length != (long)rows * columns)
            throw new ArgumentException($"{a.Length} values are not a {rows}×{columns} matrix with positive sizes", nameof(a));
        int k = Math.Min(rows, columns);
        // G = A·Aᵀ (wide A) or Aᵀ·A (tall A) by the float64 GEMM of the SVD, reading A in place, and only G's lower
        // triangle, which is all the eigensolver reads.
        var g = new double[(long)k * k];
        fixed (double* pg = g, pa = a)
        {
            if (rows <= columns)
                BlockedGemm.MultiplyAdd(pg, k, pa, columns, false, pa, columns, true, k, k, columns, 1.0, MatrixArguments.Threads(threads), BlockedGemm.Triangle.Lower);
            else
                BlockedGemm.MultiplyAdd(pg, k, pa, columns, true, pa, columns, false, k, k, rows, 1.0, MatrixArguments.Threads(threads), BlockedGemm.Triangle.Lower);
        }
        var lambda = SymmetricEigen.Values(g, k, threads);
        return Array.ConvertAll(lambda, l => Math.Sqrt(Math.Max(l, 0)));
    }
}
