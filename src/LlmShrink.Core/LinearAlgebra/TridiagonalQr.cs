namespace LlmShrink.LinearAlgebra;

/// <summary>
/// Eigenvalues (and optionally eigenvectors) of a symmetric tridiagonal matrix by the implicit symmetric QR
/// algorithm with Wilkinson shifts (Golub &amp; Van Loan, 4th ed., Algorithms 8.3.2 and 8.3.3; LAPACK dsteqr):
/// each step chases a bulge down an unreduced block with Givens rotations, and off-diagonals that fall below
/// ε·(|d_i| + |d_{i+1}|) split the matrix.
///
/// Eigenvalues alone cost O(n²). With eigenvectors (used for the small blocks of <see cref="TridiagonalDivideAndConquer"/>,
/// which is far cheaper for large ones), applying the ~n² rotations to the n×n vector matrix costs O(n³), so the
/// rotations are only logged while the iteration runs, and <see cref="RotationLog"/> applies a batch of them at a time
/// to column strips of the vector matrix (each strip meets every rotation of the batch while it is in cache).
/// </summary>
static class TridiagonalQr
{
    const double Epsilon = 1.1102230246251565e-16; // unit roundoff 2⁻⁵³
    const int MaxStepsPerValue = 30;

    /// <summary>
    /// On return <paramref name="d"/> [n] holds the eigenvalues (unsorted) and <paramref name="e"/> [n−1] is destroyed.
    /// With <paramref name="w"/> [n, n], which should start as the identity, each rotation is applied to rows of
    /// W, so that row i ends as the eigenvector of eigenvalue d[i]: W T Wᵀ = diag(d) for the original T.
    /// </summary>
    public static void Solve(double[] d, double[] e, int n, double[]? w, int threads)
    {
        var log = w is null ? null : new RotationLog(w, n, threads);
        int hi = n - 1, steps = 0;
        while (hi > 0)
        {
            // Deflate from the bottom: find the unreduced block [lo, hi].
            if (Negligible(d, e, hi - 1))
            {
                e[hi - 1] = 0;
                hi--;
                continue;
            }
            int lo = hi - 1;
            while (lo > 0 && !Negligible(d, e, lo - 1)) lo--;
            if (lo > 0) e[lo - 1] = 0;
            if (++steps > MaxStepsPerValue * n)
                throw new ShrinkException("symmetric eigensolver: the tridiagonal QR iteration did not converge");
            Step(d, e, lo, hi, log);
        }
        log?.Flush();
    }

    static bool Negligible(double[] d, double[] e, int i) =>
        Math.Abs(e[i]) <= Epsilon * (Math.Abs(d[i]) + Math.Abs(d[i + 1])) || Math.Abs(e[i]) < double.Epsilon * 1e10;

    /// <summary>One implicit QR step with the Wilkinson shift on the unreduced block [lo, hi].</summary>
    static void Step(double[] d, double[] e, int lo, int hi, RotationLog? log)
    {
        // Wilkinson shift: the eigenvalue of the trailing 2×2 block nearer to d[hi].
        double delta = 0.5 * (d[hi - 1] - d[hi]), b = e[hi - 1];
        double shift = d[hi] - b * b / (delta + Math.CopySign(double.Hypot(delta, b), delta));
        double x = d[lo] - shift, z = e[lo];
        log?.Sweep(lo, hi);
        for (int k = lo; k < hi; k++)
        {
            // Rotation P = [c s; −s c] on rows/columns k, k+1 with P·[x; z] = [r; 0].
            double r = double.Hypot(x, z), c = r == 0 ? 1 : x / r, s = r == 0 ? 0 : z / r;
            if (k > lo) e[k - 1] = r;
            double a0 = d[k], a1 = d[k + 1], off = e[k];
            d[k] = c * c * a0 + 2 * c * s * off + s * s * a1;
            d[k + 1] = s * s * a0 - 2 * c * s * off + c * c * a1;
            e[k] = c * s * (a1 - a0) + (c * c - s * s) * off;
            if (k + 1 < hi)
            {
                // The rotation pushes the bulge to (k, k+2); the next rotation removes it against e[k].
                z = s * e[k + 1];
                e[k + 1] *= c;
                x = e[k];
            }
            log?.Record(c, s);
        }
    }
}
