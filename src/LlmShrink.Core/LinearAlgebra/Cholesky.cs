using System.Numerics.Tensors;

namespace LlmShrink.LinearAlgebra;

/// <summary>
/// Blocked float64 Cholesky factorization and triangular inverse (row-major, n×n), and the factor GPTQ
/// needs: the upper-triangular U with UᵀU = H⁻¹ (Frantar et al. 2022, §4 "Cholesky reformulation").
///
/// The reference computes it as cholesky(cholesky_inverse(cholesky(H)), upper) — three O(n³) steps. Here
/// it takes two: with J the order-reversing permutation, factor JHJ = LLᵀ; then H = RRᵀ with R = JLJ upper
/// triangular, so H⁻¹ = R⁻ᵀR⁻¹ = UᵀU with U = R⁻¹ = J L⁻¹ J, which is upper triangular with a positive
/// diagonal — the (unique) upper Cholesky factor of H⁻¹.
/// </summary>
public static class Cholesky
{
    const int Block = 128;

    /// <summary>U (upper, row-major) with UᵀU = H⁻¹, for symmetric positive definite H.</summary>
    public static double[] InverseUpperFactor(ReadOnlySpan<double> h, int n)
    {
        var u = h.ToArray();
        InverseUpperFactorInPlace(u, n);
        return u;
    }

    /// <summary>
    /// As <see cref="InverseUpperFactor"/>, overwriting <paramref name="h"/> with U, so the n×n matrix exists once (for
    /// GPTQ on a 7B down_proj, n = 11008, it is ~1 GB); the workspace besides is O(128·n).
    /// </summary>
    public static void InverseUpperFactorInPlace(double[] h, int n)
    {
        // JHJ: element (i, j) moves to (n−1−i, n−1−j), which in row-major order is reversing the whole array.
        Array.Reverse(h, 0, n * n);
        FactorLower(h, n);
        InvertLowerInPlace(h, n);
        // U = J L⁻¹ J: reversing again moves the lower-triangular inverse to the upper triangle.
        Array.Reverse(h, 0, n * n);
    }

    /// <summary>
    /// In-place A = LLᵀ: the lower triangle of <paramref name="a"/> becomes L, the strict upper triangle is
    /// zeroed. Right-looking blocked algorithm: factor a diagonal block, solve the panel below it, then
    /// subtract the panel's outer product from the trailing matrix (the GEMM that carries the flops).
    /// </summary>
    public static void FactorLower(double[] a, int n)
    {
        if (a.Length != n * n) throw new ArgumentException("Cholesky: matrix is not n×n");
        var panelT = new double[Block * n];
        for (int k0 = 0; k0 < n; k0 += Block)
        {
            int kb = Math.Min(Block, n - k0), below = n - k0 - kb;
            FactorDiagonalBlock(a, n, k0, kb);

            // Panel: L21 = A21 · L11⁻ᵀ, row by row (forward substitution against L11).
            for (int i = k0 + kb; i < n; i++)
            {
                var row = a.AsSpan(i * n + k0, kb);
                for (int j = 0; j < kb; j++)
                {
                    var lj = a.AsSpan((k0 + j) * n + k0, j);
                    row[j] = (row[j] - TensorPrimitives.Dot(row[..j], lj)) / a[(k0 + j) * n + k0 + j];
                }
            }
            if (below == 0) continue;

            // Trailing update, lower part only: A22 −= L21 L21ᵀ, one block row of A22 at a time.
            for (int kk = 0; kk < kb; kk++)
                for (int j = 0; j < below; j++)
                    panelT[kk * below + j] = -a[(k0 + kb + j) * n + k0 + kk];
            int trailingBlocks = (below + Block - 1) / Block, panelStart = k0, trailingStart = k0 + kb, panelWidth = kb;
            Parallel.For(0, trailingBlocks, block =>
            {
                int r0 = block * Block, rows = Math.Min(Block, below - r0), cols = r0 + rows;
                int start = (trailingStart + r0) * n;
                DenseKernels.MultiplyAdd<double>(a.AsSpan(start + trailingStart), n, a.AsSpan(start + panelStart), n,
                    panelT, below, rows, cols, panelWidth);
            });
        }
        for (int i = 0; i < n; i++) a.AsSpan(i * n + i + 1, n - i - 1).Clear();
    }

    static void FactorDiagonalBlock(double[] a, int n, int k0, int kb)
    {
        for (int j = k0; j < k0 + kb; j++)
        {
            var rowJ = a.AsSpan(j * n + k0, j - k0);
            double d = a[j * n + j] - TensorPrimitives.Dot<double>(rowJ, rowJ);
            if (!(d > 0))
                throw new ShrinkException($"Cholesky: matrix is not positive definite (pivot {j} is {d}); increase dampening");
            d = Math.Sqrt(d);
            a[j * n + j] = d;
            for (int i = j + 1; i < k0 + kb; i++)
                a[i * n + j] = (a[i * n + j] - TensorPrimitives.Dot<double>(a.AsSpan(i * n + k0, j - k0), rowJ)) / d;
        }
    }

    /// <summary>
    /// L ← L⁻¹ for lower-triangular L whose strict upper triangle is zero (as <see cref="FactorLower"/> leaves it).
    /// Block row by block row: X_ii = L_ii⁻¹ and X_i,0:i = −X_ii (L_i,0:i X_0:i,0:i), the product a GEMM that skips
    /// X's zero upper part. Block row i of X needs only block row i of L and the rows of X above it, so each block
    /// row of L is overwritten once its products are formed.
    /// </summary>
    public static void InvertLowerInPlace(double[] l, int n)
    {
        if (l.Length < n * n) throw new ArgumentException("Cholesky: matrix is not n×n");
        var t = new double[Block * n];
        var diagInv = new double[Block * Block];
        var negDiagInv = new double[Block * Block];
        for (int i0 = 0; i0 < n; i0 += Block)
        {
            int ib = Math.Min(Block, n - i0);
            // Diagonal block from L X = I, row by row: L[i,i] X[i,c] = −Σ_{k=c..i−1} L[i,k] X[k,c].
            var xd = diagInv.AsSpan(0, ib * ib);
            xd.Clear();
            for (int r = 0; r < ib; r++)
            {
                int i = i0 + r;
                xd[r * ib + r] = 1.0 / l[i * n + i];
                for (int c = r - 1; c >= 0; c--)
                {
                    double s = 0;
                    for (int k = c; k < r; k++) s += l[i * n + i0 + k] * xd[k * ib + c];
                    xd[r * ib + c] = -s / l[i * n + i];
                }
            }
            for (int r = 0; r < ib; r++) xd.Slice(r * ib, ib).CopyTo(l.AsSpan((i0 + r) * n + i0, ib));
            if (i0 == 0) continue;

            // T = L[i-block, 0:i0] · X[0:i0, 0:i0]; column block jb only meets rows k ≥ jb of lower-triangular X.
            var tSpan = t.AsSpan(0, ib * i0);
            tSpan.Clear();
            int rowStart = i0, rowCount = ib;
            Parallel.For(0, (i0 + Block - 1) / Block, block =>
            {
                int j0 = block * Block, jb = Math.Min(Block, rowStart - j0);
                DenseKernels.MultiplyAdd<double>(t.AsSpan(j0, rowCount * rowStart - j0), rowStart, l.AsSpan(rowStart * n + j0), n,
                    l.AsSpan(j0 * n + j0), n, rowCount, jb, rowStart - j0);
            });
            for (int r = 0; r < ib; r++)
            {
                for (int c = 0; c < ib; c++) negDiagInv[r * ib + c] = -xd[r * ib + c];
                l.AsSpan((i0 + r) * n, i0).Clear(); // L's block row is consumed: X_i,0:i accumulates from zero
            }
            DenseKernels.MultiplyAdd<double>(l.AsSpan(i0 * n), n, negDiagInv, ib, tSpan, i0, ib, i0, ib);
        }
    }
}
