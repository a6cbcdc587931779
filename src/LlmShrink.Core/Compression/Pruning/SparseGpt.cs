using System.Numerics.Tensors;
using LlmShrink.Compression.Quantization;
using LlmShrink.LinearAlgebra;

namespace LlmShrink.Compression.Pruning;

/// <summary>SparseGPT settings; the defaults are the reference implementation's.</summary>
/// <param name="PercentDamp">λ = PercentDamp · mean(diag H) is added to H's diagonal before inverting.</param>
/// <param name="BlockSize">
/// Columns per lazy batch (B in Algorithm 1) and per unstructured mask selection (B_s): errors inside a block are applied
/// at once, the rest of W is updated with one GEMM per block. A multiple of M for N:M.
/// </param>
public sealed record SparseGptOptions(double PercentDamp = 0.01, int BlockSize = 128);

/// <summary>What SparseGPT returns.</summary>
/// <param name="Keep">Keep-mask, row-major [rows, columns], true = kept.</param>
/// <param name="Weights">Ŵ, row-major [rows, columns]: the kept weights as SparseGPT updated them (and rounded to their grid, with a scheme); pruned weights are 0.</param>
/// <param name="Quantized">With a scheme, Ŵ as codes and grids in identity group order (its Dequantize() is <paramref name="Weights"/>); otherwise null.</param>
public sealed record SparseGptResult(bool[] Keep, float[] Weights, QuantizedMatrix? Quantized);

/// <summary>
/// SparseGPT (Frantar and Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot",
/// Algorithm 1): GPTQ's column walk with pruning in place of rounding. The pruned weights of column j go to 0 and
/// their error e = (w − ŵ)/U_jj is spread over the columns not yet visited through row j of U, the upper Cholesky factor
/// of H⁻¹ — the Optimal Brain Surgeon update that minimizes ‖(W − Ŵ)X‖² for H = 2XXᵀ/n given the mask. The mask is
/// chosen as the walk goes, from the weights as updated so far, by the OBS saliency w²/[H⁻¹]_jj², here w²/U_jj²
/// ("Adaptive Mask Selection"):
/// - unstructured: for each block of B_s = 128 columns, the fraction p with the smallest scores of the whole block, all
///   rows together (as the reference does), so each row's own sparsity varies around p;
/// - N:M: at every M-th column, in each row, the M − N smallest scores of the next M columns ("Semi-Structured Sparsity").
/// With a quantization scheme, kept weights are rounded to their grid in the same walk (a group's grid fitted when the
/// walk reaches it, as GPTQ does) and pruned ones take the grid's zero code; the error is spread either way
/// ("Joint Sparsification &amp; Quantization"). Rows are independent given the mask, so they are processed in chunks in parallel.
/// </summary>
public static class SparseGpt
{
    const int RowChunk = 128;

    /// <param name="w">Weight W, row-major [rows, columns]; left unchanged.</param>
    /// <param name="hessian">H [columns, columns] from <see cref="HessianAccumulator.ToHessian"/>; left unchanged (it is copied).</param>
    /// <param name="sparsity">Fraction of the weights pruned; required for unstructured, implied (1 − N/M) for N:M.</param>
    /// <param name="scheme">Quantizes the kept weights in the same pass (per-group or per-channel grids); null only prunes.</param>
    public static SparseGptResult Prune(ReadOnlySpan<float> w, int rows, int columns, ReadOnlySpan<double> hessian,
        SparsityPattern pattern, double? sparsity = null, QuantScheme? scheme = null, SparseGptOptions? options = null)
    {
        if (hessian.Length != (long)columns * columns) throw new ArgumentException($"SparseGPT: H must be {columns}×{columns}");
        return PruneConsumingHessian(w, rows, columns, hessian.ToArray(), pattern, sparsity, scheme, options);
    }

    /// <summary>
    /// As <see cref="Prune"/>, using <paramref name="hessian"/> as the float64 workspace: it is dampened and turned into U
    /// (then into U in float32) in place, as <see cref="Gptq.QuantizeConsumingHessian"/> does. H is garbage afterwards.
    /// </summary>
    public static SparseGptResult PruneConsumingHessian(ReadOnlySpan<float> w, int rows, int columns, double[] hessian,
        SparsityPattern pattern, double? sparsity = null, QuantScheme? scheme = null, SparseGptOptions? options = null)
    {
        options ??= new SparseGptOptions();
        if (w.Length != (long)rows * columns || hessian.Length != (long)columns * columns)
            throw new ArgumentException($"SparseGPT: W must be {rows}×{columns} and H {columns}×{columns}");
        double fraction = pattern.Resolve(sparsity, columns, "SparseGPT");
        int n = columns, block = options.BlockSize;
        if (block <= 0 || (pattern.IsNOfM && block % pattern.M != 0) || !(options.PercentDamp >= 0))
            throw new ShrinkException($"SparseGPT: block size must be positive (a multiple of M for {pattern}) and dampening non-negative ({options})");
        var weights = w.ToArray(); // the copy SparseGPT updates, and returns as Ŵ
        InverseHessianFactor.NeutralizeDeadInputs(hessian, weights, rows, n);

        QuantizedMatrix? q = scheme == null ? null : QuantizedMatrix.Create(rows, n, scheme);
        if (scheme != null && scheme.Granularity != QuantGranularity.PerGroup)
        {
            // One grid per row (or for the whole matrix), fitted upfront to the original weights as GPTQ does.
            var grids = Rtn.FitGrids(weights, rows, n, scheme);
            for (int r = 0; r < rows; r++) q!.SetGrid(0, r, grids[r]);
        }
        InverseHessianFactor.DampenAndFactor(hessian, n, options.PercentDamp);

        var keep = new bool[rows * n];
        var negErrors = new float[rows * block]; // −(w − ŵ)/U_jj for the current block, [rows, block]
        var blockMask = pattern.IsNOfM ? null : new BlockMask(rows * block);
        int chunks = (rows + RowChunk - 1) / RowChunk;
        for (int i1 = 0; i1 < n; i1 += block)
        {
            int i2 = Math.Min(i1 + block, n);
            blockMask?.Choose(weights, hessian, n, rows, i1, i2, fraction, keep);
            Parallel.For(0, chunks, chunk =>
            {
                int r0 = chunk * RowChunk, count = Math.Min(RowChunk, rows - r0);
                PruneBlock(weights, InverseHessianFactor.Float32(hessian, n), n, r0, count, i1, i2, block, pattern, keep, q,
                    negErrors.AsSpan(r0 * block, count * block));
            });
        }
        return new SparseGptResult(keep, weights, q);
    }

    /// <summary>The unstructured mask, block by block; its buffers (a block's scores, mask and selection scratch) are reused.</summary>
    sealed class BlockMask(int capacity)
    {
        readonly float[] scores = new float[capacity], scratch = new float[2 * capacity];
        readonly bool[] blockKeep = new bool[capacity];

        /// <summary>
        /// Columns [i1, i2) of all rows together: the round(p · rows · width) weights of smallest w²/U_jj² are pruned.
        /// Scores are computed in parallel row chunks, then ranked as one set.
        /// </summary>
        public void Choose(float[] wp, double[] h, int n, int rows, int i1, int i2, double fraction, bool[] keep)
        {
            int width = i2 - i1, count = rows * width;
            Parallel.For(0, (rows + RowChunk - 1) / RowChunk, chunk =>
            {
                var u = InverseHessianFactor.Float32(h, n);
                for (int r = chunk * RowChunk; r < Math.Min(rows, (chunk + 1) * RowChunk); r++)
                    for (int j = i1; j < i2; j++)
                    {
                        float w = wp[r * n + j], d = u[j * n + j];
                        scores[r * width + j - i1] = w * w / (d * d);
                    }
            });
            ScoreSelection.PruneSmallest(scores.AsSpan(0, count), (int)Math.Round(fraction * count), blockKeep, scratch);
            for (int r = 0; r < rows; r++) blockKeep.AsSpan(r * width, width).CopyTo(keep.AsSpan(r * n + i1, width));
        }
    }

    /// <summary>The column walk over [i1, i2) for rows r0 .. r0 + rowCount, then the lazy update of the columns after it.</summary>
    static void PruneBlock(float[] wp, Span<float> u, int n, int r0, int rowCount, int i1, int i2, int block,
        SparsityPattern pattern, bool[] keep, QuantizedMatrix? q, Span<float> negErrors)
    {
        Span<float> groupScores = stackalloc float[SparsityPattern.MaxGroup];
        Span<float> groupScratch = stackalloc float[2 * SparsityPattern.MaxGroup];
        int m = pattern.M, groupWidth = q?.Scheme.GroupWidth(n) ?? n;
        bool fitGroups = q?.Scheme.Granularity == QuantGranularity.PerGroup;
        for (int i = i1; i < i2; i++)
        {
            if (fitGroups && i % groupWidth == 0)
                for (int row = r0; row < r0 + rowCount; row++)
                    // As in GPTQ, the group's grid comes from the weights as updated so far; those about to be pruned are small by choice.
                    q!.SetGrid(i / groupWidth, row,
                        QuantGrid.Fit(wp.AsSpan(row * n + i, Math.Min(groupWidth, n - i)), q.Scheme.Bits, q.Scheme.Symmetric));
            if (pattern.IsNOfM && i % m == 0)
                for (int row = r0; row < r0 + rowCount; row++)
                {
                    for (int j = 0; j < m; j++)
                    {
                        float w = wp[row * n + i + j], d = u[(i + j) * n + i + j];
                        groupScores[j] = w * w / (d * d);
                    }
                    ScoreSelection.PruneSmallest(groupScores[..m], m - pattern.N, keep.AsSpan(row * n + i, m), groupScratch);
                }
            float dii = u[i * n + i];
            var uTail = u.Slice(i * n + i + 1, i2 - i - 1);
            for (int r = 0; r < rowCount; r++)
            {
                int at = (r0 + r) * n + i;
                float value = wp[at], kept = keep[at] ? value : 0f;
                if (q != null)
                {
                    var grid = q.Grid(i / groupWidth, r0 + r);
                    int code = keep[at] ? grid.Code(value) : grid.Zero; // Value(Zero) is exactly 0: a grid always holds 0
                    q.Codes[at] = (byte)code;
                    kept = grid.Value(code);
                }
                wp[at] = kept;
                float error = (value - kept) / dii;
                negErrors[r * block + i - i1] = -error;
                if (error == 0) continue; // a weight kept exactly moves nothing
                // W[row, i+1..i2) −= error · U[i, i+1..i2): the in-block part of the OBS update.
                var wTail = wp.AsSpan(at + 1, i2 - i - 1);
                TensorPrimitives.MultiplyAdd(uTail, -error, wTail, wTail);
            }
        }
        // Lazy batch update of all later columns: W[:, i2..n) += (−E) · U[i1..i2, i2..n).
        if (i2 < n)
            DenseKernels.MultiplyAdd<float>(wp.AsSpan(r0 * n + i2), n, negErrors, block, u[(i1 * n + i2)..], n, rowCount, n - i2, i2 - i1);
    }
}
