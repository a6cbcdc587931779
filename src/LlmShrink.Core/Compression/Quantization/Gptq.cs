using System.Numerics.Tensors;
using LlmShrink.LinearAlgebra;

namespace LlmShrink.Compression.Quantization;

/// <summary>GPTQ settings; the defaults are the reference implementation's.</summary>
/// <param name="PercentDamp">λ = PercentDamp · mean(diag H) is added to H's diagonal before inverting.</param>
/// <param name="BlockSize">Columns per lazy batch: errors inside a block are applied at once, the rest of W is updated with one GEMM per block.</param>
/// <param name="ActOrder">Quantize columns in order of decreasing H_ii (most activated inputs first).</param>
/// <param name="StaticGroups">Fit every group's grid upfront from the original W (in original column order) instead of when GPTQ reaches the group.</param>
public sealed record GptqOptions(double PercentDamp = 0.01, int BlockSize = 128, bool ActOrder = false, bool StaticGroups = false);

/// <summary>
/// GPTQ (Frantar, Ashkboos, Hoefler, Alistarh 2022, "GPTQ: Accurate Post-Training Quantization for
/// Generative Pre-trained Transformers", Algorithm 1). Columns of W are quantized one at a time; the
/// rounding error of column i, divided by U_ii, is spread over the not-yet-quantized columns through row i of
/// U, the upper Cholesky factor of H⁻¹ — the Optimal Brain Surgeon update that minimizes ‖(W − Ŵ)X‖²
/// for H = 2XXᵀ/n. Every output row is independent given U, so rows are processed in parallel chunks.
/// </summary>
public static class Gptq
{
    const int RowChunk = 128;

    /// <param name="w">Weight W, row-major [rows, columns].</param>
    /// <param name="hessian">H [columns, columns] from <see cref="HessianAccumulator.ToHessian"/>; left unchanged (it is copied).</param>
    /// <param name="keep">
    /// Optional keep-mask [rows, columns] (e.g. SparseGPT's): a weight outside it gets its grid's zero code, exactly 0, and
    /// its error is spread like any rounding error, so the sparsity pattern survives quantization. Null keeps every weight.
    /// </param>
    public static QuantizedMatrix Quantize(ReadOnlySpan<float> w, int rows, int columns, ReadOnlySpan<double> hessian,
        QuantScheme scheme, GptqOptions? options = null, bool[]? keep = null)
    {
        if (hessian.Length != (long)columns * columns) throw new ArgumentException($"GPTQ: H must be {columns}×{columns}");
        return QuantizeConsumingHessian(w, rows, columns, hessian.ToArray(), scheme, options, keep);
    }

    /// <summary>
    /// As <see cref="Quantize"/>, using <paramref name="hessian"/> as the float64 workspace: it is permuted, dampened
    /// and turned into U (then into U in float32) in place, so besides a float32 copy of W no other n×n matrix is
    /// allocated (a 7B down_proj's H is 11008² float64 ≈ 1 GB). H is garbage afterwards.
    /// </summary>
    /// <param name="cancel">Checked at every block of columns: a 7B down_proj takes tens of seconds, too long to wait for Ctrl+C.</param>
    public static QuantizedMatrix QuantizeConsumingHessian(ReadOnlySpan<float> w, int rows, int columns, double[] hessian,
        QuantScheme scheme, GptqOptions? options = null, bool[]? keep = null, CancellationToken cancel = default)
    {
        options ??= new GptqOptions();
        if (w.Length != (long)rows * columns || hessian.Length != (long)columns * columns || (keep != null && keep.Length != w.Length))
            throw new ArgumentException($"GPTQ: W and the keep-mask must be {rows}×{columns} and H {columns}×{columns}");
        if (options.BlockSize <= 0 || !(options.PercentDamp >= 0))
            throw new ShrinkException($"GPTQ: block size must be positive and dampening non-negative ({options})");
        int n = columns;
        var weights = w.ToArray(); // the copy GPTQ updates

        var h = hessian;
        InverseHessianFactor.NeutralizeDeadInputs(h, weights, rows, n);

        bool grouped = scheme.Granularity == QuantGranularity.PerGroup;
        int groupSize = scheme.GroupWidth(n);
        var q = QuantizedMatrix.Create(rows, n, scheme);
        // Grids fitted upfront in original column order: per-tensor, per-channel, and static groups.
        QuantGrid[]? upfront = !grouped || options.StaticGroups ? Rtn.FitGrids(weights, rows, n, scheme) : null;
        if (upfront != null)
            for (int g = 0; g < q.GroupCount; g++)
                for (int r = 0; r < rows; r++) q.SetGrid(g, r, upfront[g * rows + r]);

        // act_order: position p of the quantization order holds original column perm[p]; H and W are permuted in place.
        var perm = Enumerable.Range(0, n).ToArray();
        if (options.ActOrder)
        {
            var diagonal = new double[n];
            for (int i = 0; i < n; i++) diagonal[i] = h[i * n + i];
            perm = perm.OrderByDescending(i => diagonal[i]).ToArray(); // stable: ties keep column order
            PermuteColumns(h, n, n, perm);
            PermuteRows(h, n, perm);
            PermuteColumns(weights, rows, n, perm);
        }
        if (grouped && options.ActOrder && !options.StaticGroups)
            for (int p = 0; p < n; p++) q.GroupIndex[perm[p]] = p / groupSize;

        InverseHessianFactor.DampenAndFactor(h, n, options.PercentDamp);

        int chunks = (rows + RowChunk - 1) / RowChunk;
        Parallel.For(0, chunks, chunk =>
        {
            int r0 = chunk * RowChunk, count = Math.Min(RowChunk, rows - r0);
            QuantizeRows(weights, InverseHessianFactor.Float32(h, n), n, r0, count, scheme, options, perm, q, upfront,
                grouped && !options.StaticGroups, keep, cancel);
        });
        cancel.ThrowIfCancellationRequested(); // the row chunks return early when cancelled (an exception inside Parallel.For would arrive wrapped)
        return q;
    }

    /// <summary>Row-major [rows, n] ← its columns in the order <paramref name="perm"/> (new column p = old column perm[p]).</summary>
    static void PermuteColumns<T>(T[] m, int rows, int n, int[] perm)
    {
        var row = new T[n];
        for (int r = 0; r < rows; r++)
        {
            m.AsSpan(r * n, n).CopyTo(row);
            for (int p = 0; p < n; p++) m[r * n + p] = row[perm[p]];
        }
    }

    /// <summary>Row-major [n, n] ← its rows in the order <paramref name="perm"/>, following the permutation's cycles with one row of scratch.</summary>
    static void PermuteRows(double[] m, int n, int[] perm)
    {
        var done = new bool[n];
        var saved = new double[n];
        for (int start = 0; start < n; start++)
        {
            if (done[start] || perm[start] == start) continue;
            // New row p = old row perm[p]: walk p → perm[p], saving the first row that gets overwritten.
            m.AsSpan(start * n, n).CopyTo(saved);
            int p = start;
            while (true)
            {
                done[p] = true;
                int from = perm[p];
                if (from == start) { saved.CopyTo(m.AsSpan(p * n, n)); break; }
                m.AsSpan(from * n, n).CopyTo(m.AsSpan(p * n, n));
                p = from;
            }
        }
    }

    static void QuantizeRows(float[] wp, Span<float> u, int n, int r0, int rowCount, QuantScheme scheme, GptqOptions options,
        int[] perm, QuantizedMatrix q, QuantGrid[]? upfront, bool fitGroupsOnTheWay, bool[]? keep, CancellationToken cancel)
    {
        int block = options.BlockSize, groupSize = scheme.GroupWidth(n), rows = q.Rows;
        var negErrors = new float[rowCount * block]; // −(w − ŵ)/U_ii for the current block, [rowCount, block]
        var grids = new QuantGrid[rowCount];
        for (int i1 = 0; i1 < n; i1 += block)
        {
            if (cancel.IsCancellationRequested) return;
            int i2 = Math.Min(i1 + block, n);
            for (int i = i1; i < i2; i++)
            {
                int column = perm[i];
                if (fitGroupsOnTheWay && i % groupSize == 0)
                    for (int r = 0; r < rowCount; r++)
                    {
                        // The group's grid comes from the weights as GPTQ has updated them so far.
                        grids[r] = QuantGrid.Fit(wp.AsSpan((r0 + r) * n + i, Math.Min(groupSize, n - i)), scheme.Bits, scheme.Symmetric);
                        q.SetGrid(i / groupSize, r0 + r, grids[r]);
                    }
                float d = u[i * n + i];
                var uTail = u.Slice(i * n + i + 1, i2 - i - 1);
                for (int r = 0; r < rowCount; r++)
                {
                    int row = r0 + r;
                    var grid = fitGroupsOnTheWay ? grids[r] : upfront![column / groupSize * rows + row];
                    float value = wp[row * n + i];
                    // The mask is read at the original column: act_order permutes it with the columns.
                    int code = keep == null || keep[row * n + column] ? grid.Code(value) : grid.Zero;
                    q.Codes[row * n + column] = (byte)code;
                    float error = (value - grid.Value(code)) / d;
                    // W[row, i+1..i2) −= error · U[i, i+1..i2): the in-block part of the OBS update.
                    var wTail = wp.AsSpan(row * n + i + 1, i2 - i - 1);
                    TensorPrimitives.MultiplyAdd(uTail, -error, wTail, wTail);
                    negErrors[r * block + i - i1] = -error;
                }
            }
            // Lazy batch update of all later columns: W[:, i2..n) += (−E) · U[i1..i2, i2..n).
            if (i2 < n)
                DenseKernels.MultiplyAdd<float>(wp.AsSpan(r0 * n + i2), n, negErrors, block,
                    u[(i1 * n + i2)..], n, rowCount, n - i2, i2 - i1);
        }
    }
}
