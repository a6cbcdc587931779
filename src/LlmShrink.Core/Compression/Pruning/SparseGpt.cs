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
/// With a quantization scheme, kept weights are rounded to their grid in the same walk and pruned ones take the grid's
/// zero code; the error is spread either way ("Joint Sparsification &amp; Quantization"). A group's grid is fitted when the
/// walk reaches the group, as GPTQ does, but to the group's kept weights as its own pruning will leave them
/// (<see cref="FitGroupGrid"/>). Rows are independent given the mask, so they are processed in chunks in parallel.
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
    /// <param name="cancel">Checked at every block of columns: a 7B down_proj takes tens of seconds, too long to wait for Ctrl+C.</param>
    public static SparseGptResult PruneConsumingHessian(ReadOnlySpan<float> w, int rows, int columns, double[] hessian,
        SparsityPattern pattern, double? sparsity = null, QuantScheme? scheme = null, SparseGptOptions? options = null, CancellationToken cancel = default)
    {
        options ??= new SparseGptOptions();
        if (w.Length != (long)rows * columns || hessian.Length != (long)columns * columns)
            throw new ArgumentException($"SparseGPT: W must be {rows}×{columns} and H {columns}×{columns}");
        double fraction = pattern.Resolve(sparsity, columns, "SparseGPT");
        int n = columns, block = options.BlockSize;
        if (block <= 0 || (pattern.IsNOfM && block % pattern.M != 0) || !(options.PercentDamp >= 0))
            throw new ShrinkException($"SparseGPT: block size must be positive (a multiple of M for {pattern}) and dampening non-negative ({options})");
        // FitGroupGrid walks a whole group when the walk reaches it: the group must hold whole N:M groups, or lie inside
        // one block, whose unstructured mask is chosen at the block's start.
        int g = scheme?.GroupWidth(n) ?? n;
        if (g < n && (pattern.IsNOfM ? g % pattern.M != 0 : block % g != 0))
            throw new ShrinkException(pattern.IsNOfM
                ? $"SparseGPT: quantization groups of {g} columns must be a multiple of M for {pattern}"
                : $"SparseGPT: quantization groups of {g} columns must lie inside the blocks of {block} columns whose mask is chosen together");
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
            cancel.ThrowIfCancellationRequested();
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
        var group = fitGroups ? new float[Math.Min(groupWidth, n)] : null;
        var groupKeep = fitGroups ? new bool[group!.Length] : null;
        for (int i = i1; i < i2; i++)
        {
            if (fitGroups && i % groupWidth == 0)
                for (int row = r0; row < r0 + rowCount; row++)
                {
                    int width = Math.Min(groupWidth, n - i);
                    q!.SetGrid(i / groupWidth, row, FitGroupGrid(wp.AsSpan(row * n + i, width), u, n, i, pattern,
                        keep.AsSpan(row * n + i, width), q.Scheme, group, groupKeep, groupScores, groupScratch));
                }
            if (pattern.IsNOfM && i % m == 0)
                for (int row = r0; row < r0 + rowCount; row++)
                    ChooseNOfM(wp.AsSpan(row * n + i, m), u, n, i, pattern, keep.AsSpan(row * n + i, m), groupScores, groupScratch);
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

    /// <summary>N:M ("Semi-Structured Sparsity"): of the M weights <paramref name="w"/> at columns column .. column + M, the M − N of smallest w²/U_jj² are pruned.</summary>
    static void ChooseNOfM(ReadOnlySpan<float> w, ReadOnlySpan<float> u, int n, int column, SparsityPattern pattern,
        Span<bool> keep, Span<float> scores, Span<float> scratch)
    {
        for (int j = 0; j < pattern.M; j++)
        {
            float d = u[(column + j) * n + column + j];
            scores[j] = w[j] * w[j] / (d * d);
        }
        ScoreSelection.PruneSmallest(scores[..pattern.M], pattern.M - pattern.N, keep, scratch);
    }

    /// <summary>
    /// One row's grid for the group of columns [i, i + width) whose current weights are <paramref name="w"/>: fitted to
    /// the group's kept weights as the group's own pruning will leave them, found by running the walk over the group
    /// on a copy, pruning only (N:M masks chosen as the walk chooses them; unstructured, the block's mask
    /// <paramref name="blockKeep"/>, chosen already). GPTQ fits the grid to the group's weights at its start because
    /// rounding moves the weights after it by little; pruning half of them does not: each pruned weight's whole value is
    /// spread over the later columns, so the kept weights grow past the range fitted at the start and are clamped to
    /// the grid's ends. Measured on tinylit-8m (2:4, 4-bit g128 symmetric): fitted at the group's start, 1.5–2.8 % of
    /// o_proj's kept weights (0.6–1.1 % elsewhere) were clamped and o_proj's output error was above SparseGPT then RTN
    /// in layers 1 and 4 (1.08e-2 vs 1.05e-2, 1.44e-2 vs 1.40e-2); fitted here, 0.4–0.6 % are clamped (mostly the
    /// symmetric grid's largest positive weight, which rounds to the code above the top one), o_proj's errors drop by
    /// 2–18 % (those two to 0.89e-2 and 1.25e-2), the other layers' move by −2 % to +1.3 %, and all 56 layers are below
    /// SparseGPT then RTN. The weights about to be pruned do not matter for the range: fitting the grid at the group's
    /// start without them changes no layer's error by more than 0.1 %, the group's extremes being kept weights. The
    /// wider range costs resolution where little was clamped: on SparseGptTests' layer the error drops by 9 % for 2:4
    /// with asymmetric grids and 1 % unstructured, but rises by 1–2 % with symmetric ones, whose one range covers both tails.
    /// Costs about width/4 multiply-adds per weight (the pruned half spreads over the rest of its group), against
    /// about n/2 for the lazy updates.
    /// </summary>
    static QuantGrid FitGroupGrid(ReadOnlySpan<float> w, ReadOnlySpan<float> u, int n, int i, SparsityPattern pattern,
        ReadOnlySpan<bool> blockKeep, QuantScheme scheme, Span<float> group, Span<bool> groupKeep, Span<float> scores, Span<float> scratch)
    {
        int width = w.Length;
        group = group[..width];
        groupKeep = groupKeep[..width];
        w.CopyTo(group);
        blockKeep.CopyTo(groupKeep);
        for (int j = 0; j < width; j++)
        {
            if (pattern.IsNOfM && j % pattern.M == 0) ChooseNOfM(group[j..], u, n, i + j, pattern, groupKeep.Slice(j, pattern.M), scores, scratch);
            if (groupKeep[j]) continue;
            int at = (i + j) * n + i + j;
            float error = group[j] / u[at];
            group[j] = 0;
            var tail = group[(j + 1)..];
            TensorPrimitives.MultiplyAdd(u.Slice(at + 1, width - j - 1), -error, tail, tail);
        }
        return QuantGrid.Fit(group, scheme.Bits, scheme.Symmetric);
    }
}
