using System.Numerics.Tensors;
using LlmShrink.LinearAlgebra;

namespace LlmShrink.Compression.LowRank;

/// <summary>
/// The change of input coordinates T [n, n] in which a weight is truncated: the SVD is taken of W·T and the dropped part is
/// mapped back through T⁻¹, so the truncation minimizes ‖(W − W′)·T‖_F instead of ‖W − W′‖_F. With T = I this is the plain
/// truncated SVD; with T = diag(s) from activation magnitudes, ASVD (Yuan et al. 2023, §3.2); with T the Cholesky factor L
/// of XXᵀ, SVD-LLM's truncation-aware whitening (Wang et al. 2024, §3.1): then ‖(W − W′)·L‖_F² = ‖(W − W′)·X‖_F², the
/// layer's output error on the calibration inputs, and dropping singular value σᵢ of W·L costs exactly σᵢ².
/// </summary>
public abstract class InputTransform
{
    /// <summary>W·T for W [rows, Columns] in float64 (the SVD's input).</summary>
    public abstract double[] Apply(float[] w, int rows);

    /// <summary>Each row v of <paramref name="v"/> [rows, n] replaced by v·T⁻¹ in place (the right factor back in input coordinates).</summary>
    public abstract void SolveRows(double[] v, int rows);

    public static InputTransform Identity(int columns) => new IdentityTransform(columns);

    /// <summary>T = diag(<paramref name="scale"/>): every scale must be positive and finite.</summary>
    public static InputTransform Diagonal(double[] scale) => new DiagonalTransform(scale);

    /// <summary>
    /// T = L with LLᵀ = H + λI, H = XXᵀ (any positive multiple of it: the factors' product does not depend on the scale).
    /// λ starts at <paramref name="dampening"/>·mean(diag H) and grows tenfold while the factorization fails (a calibration
    /// set too small for the input width makes H singular), up to mean(diag H) itself; <see cref="Dampening"/> says which held.
    /// </summary>
    public static WhiteningTransform Whitening(ReadOnlySpan<double> h, int n, double dampening) => WhiteningTransform.Factor(h, n, dampening);

    private sealed class IdentityTransform(int columns) : InputTransform
    {
        public override double[] Apply(float[] w, int rows)
        {
            var a = new double[(long)rows * columns];
            for (int i = 0; i < a.Length; i++) a[i] = w[i];
            return a;
        }

        public override void SolveRows(double[] v, int rows) { }
    }

    private sealed class DiagonalTransform : InputTransform
    {
        private readonly double[] _scale;

        public DiagonalTransform(double[] scale)
        {
            foreach (double s in scale)
                if (!(s > 0 && double.IsFinite(s))) throw new ArgumentException($"input scales must be positive and finite, not {s}", nameof(scale));
            _scale = scale;
        }

        public override double[] Apply(float[] w, int rows)
        {
            int n = _scale.Length;
            var a = new double[(long)rows * n];
            for (int r = 0; r < rows; r++)
                for (int j = 0; j < n; j++) a[r * n + j] = w[r * n + j] * _scale[j];
            return a;
        }

        public override void SolveRows(double[] v, int rows)
        {
            int n = _scale.Length;
            for (int r = 0; r < rows; r++)
                for (int j = 0; j < n; j++) v[r * n + j] /= _scale[j];
        }
    }
}

/// <summary>SVD-LLM's whitening T = L, the lower Cholesky factor of the dampened input Gram matrix (see <see cref="InputTransform.Whitening"/>).</summary>
public sealed class WhiteningTransform : InputTransform
{
    private readonly double[] _l; // lower triangular, row-major [n, n]
    private readonly int _n;

    /// <summary>The relative dampening λ/mean(diag H) the factorization succeeded with.</summary>
    public double Dampening { get; }

    private WhiteningTransform(double[] l, int n, double dampening) => (_l, _n, Dampening) = (l, n, dampening);

    internal static WhiteningTransform Factor(ReadOnlySpan<double> h, int n, double dampening)
    {
        if (h.Length != (long)n * n) throw new ArgumentException($"H has {h.Length} entries, expected {n}×{n}", nameof(h));
        double mean = 0;
        for (int i = 0; i < n; i++) mean += h[i * n + i];
        mean /= n;
        if (!(mean > 0 && double.IsFinite(mean))) mean = 1; // no input ever active: any whitening is as good as none
        for (double relative = Math.Max(dampening, 1e-12); ; relative *= 10)
        {
            var l = h.ToArray();
            for (int i = 0; i < n; i++) l[i * n + i] += relative * mean;
            try
            {
                Cholesky.FactorLower(l, n);
                return new WhiteningTransform(l, n, relative);
            }
            catch (ShrinkException) when (relative < 1) { }
        }
    }

    /// <summary>
    /// Inputs per GEMM step of <see cref="Apply"/> and <see cref="SolveRows"/>: a block of L's rows. Two of
    /// <see cref="BlockedGemm"/>'s k-slices, so a step's product is long enough to run at the GEMM's speed, while the
    /// triangle's blocks on the diagonal, computed whole or solved row by row, stay a small share of the work.
    /// </summary>
    private const int Block = 256;

    public override unsafe double[] Apply(float[] w, int rows)
    {
        // W·L by blocks J of L's rows: (W·L)[:, 0..j1) += W[:, J]·L[J, 0..j1), a float64 GEMM per block that skips L's zero
        // upper triangle. The row-by-row update it replaces streamed all of L (0.25 GB for down_proj's 8192 inputs on the
        // Llama-3.2-1B shape) once per row of W, memory-bound: 37 s against 3.1–3.8 s for that 2048×8192 down_proj on 2
        // cores at load average ~11 (LlmShrink.Bench whiten). Products are now fused multiply-adds (rounding-level changes).
        int n = _n, threads = MatrixArguments.Threads(0);
        var a = new double[(long)rows * n];
        var slice = new double[(long)rows * Block]; // W[:, J] widened to float64, the GEMM's left operand
        fixed (double* pa = a, pl = _l, ps = slice)
            for (int j0 = 0; j0 < n; j0 += Block)
            {
                int width = Math.Min(Block, n - j0);
                for (int r = 0; r < rows; r++)
                    for (int k = 0; k < width; k++) slice[(long)r * width + k] = w[(long)r * n + j0 + k];
                BlockedGemm.MultiplyAdd(pa, n, ps, width, false, pl + (long)j0 * n, n, false, rows, j0 + width, width, 1.0, threads);
            }
        return a;
    }

    public override unsafe void SolveRows(double[] v, int rows)
    {
        // y·L = v ⇔ Lᵀ·yᵀ = vᵀ, solved by blocks J of inputs from the last: within J by back substitution, row by row
        // (y_k = v_k / L[k, k], then v[j0..k) −= y_k·L[k, j0..k)), then J's share is removed from every input still to solve
        // in one GEMM, v[:, 0..j0) −= y_J·L[J, 0..j0). Solved row by row throughout, each row of v streamed all of L: half
        // rank's 819 rows of that down_proj took 16.1 s, now 1.7 s (same bench and load).
        int n = _n, threads = MatrixArguments.Threads(0);
        var l = _l;
        fixed (double* pv = v, pl = l)
            for (int j1 = n; j1 > 0; j1 -= Block)
            {
                int j0 = Math.Max(0, j1 - Block);
                Parallel.For(0, rows, new ParallelOptions { MaxDegreeOfParallelism = threads }, r =>
                {
                    var y = v.AsSpan(r * n, n);
                    for (int k = j1 - 1; k >= j0; k--)
                    {
                        double yk = y[k] /= l[k * n + k];
                        if (yk != 0) TensorPrimitives.MultiplyAdd(l.AsSpan(k * n + j0, k - j0), -yk, y[j0..k], y[j0..k]);
                    }
                });
                if (j0 > 0) BlockedGemm.MultiplyAdd(pv, n, pv + j0, n, false, pl + (long)j0 * n, n, false, rows, j0, j1 - j0, -1.0, threads);
            }
    }
}
