using System.Numerics.Tensors;

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
    /// <param name="hessian">H [columns, columns] from <see cref="HessianAccumulator.ToHessian"/>.</param>
    public static QuantizedMatrix Quantize(ReadOnlySpan<float> w, int rows, int columns, ReadOnlySpan<double> hessian,
        QuantScheme scheme, GptqOptions? options = null)
    {
        options ??= new GptqOptions();
        if (w.Length != (long)rows * columns || hessian.Length != (long)columns * columns)
            throw new ArgumentException($"GPTQ: W must be {rows}×{columns} and H {columns}×{columns}");
        if (options.BlockSize <= 0 || !(options.PercentDamp >= 0))
            throw new ShrinkException($"GPTQ: block size must be positive and dampening non-negative ({options})");
        int n = columns;
        var weights = w.ToArray();

        // Dead inputs (never active in calibration): H_ii = 1 keeps H invertible; their weights cannot matter.
        // H itself is not copied (a 7B down_proj's is ~1 GB); only its permuted, dampened copy below is.
        var diagonal = new double[n];
        for (int i = 0; i < n; i++)
        {
            diagonal[i] = hessian[i * n + i];
            if (diagonal[i] != 0) continue;
            diagonal[i] = 1;
            for (int r = 0; r < rows; r++) weights[r * n + i] = 0;
        }

        bool grouped = scheme.Granularity == QuantGranularity.PerGroup;
        int groupSize = scheme.GroupWidth(n);
        var q = QuantizedMatrix.Create(rows, n, scheme);
        // Grids fitted upfront in original column order: per-tensor, per-channel, and static groups.
        QuantGrid[]? upfront = !grouped || options.StaticGroups ? Rtn.FitGrids(weights, rows, n, scheme) : null;
        if (upfront != null)
            for (int g = 0; g < q.GroupCount; g++)
                for (int r = 0; r < rows; r++) q.SetGrid(g, r, upfront[g * rows + r]);

        // act_order: position p of the quantization order holds original column perm[p].
        var perm = Enumerable.Range(0, n).ToArray();
        if (options.ActOrder)
            perm = perm.OrderByDescending(i => diagonal[i]).ToArray(); // stable: ties keep column order
        if (grouped && options.ActOrder && !options.StaticGroups)
            for (int p = 0; p < n; p++) q.GroupIndex[perm[p]] = p / groupSize;

        var hp = new double[n * n];
        var wp = new float[rows * n];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < n; j++) hp[i * n + j] = hessian[perm[i] * n + perm[j]];
            hp[i * n + i] = diagonal[perm[i]];
        }
        for (int r = 0; r < rows; r++)
            for (int p = 0; p < n; p++) wp[r * n + p] = weights[r * n + perm[p]];

        double damp = 0;
        for (int i = 0; i < n; i++) damp += hp[i * n + i];
        damp = options.PercentDamp * damp / n;
        for (int i = 0; i < n; i++) hp[i * n + i] += damp;

        var u64 = Cholesky.InverseUpperFactorInPlace(hp, n);
        var u = new float[n * n];
        for (int k = 0; k < u.Length; k++) u[k] = (float)u64[k];

        int chunks = (rows + RowChunk - 1) / RowChunk;
        Parallel.For(0, chunks, chunk =>
        {
            int r0 = chunk * RowChunk, count = Math.Min(RowChunk, rows - r0);
            QuantizeRows(wp, u, n, r0, count, scheme, options, perm, q, upfront, grouped && !options.StaticGroups);
        });
        return q;
    }

    static void QuantizeRows(float[] wp, float[] u, int n, int r0, int rowCount, QuantScheme scheme, GptqOptions options,
        int[] perm, QuantizedMatrix q, QuantGrid[]? upfront, bool fitGroupsOnTheWay)
    {
        int block = options.BlockSize, groupSize = scheme.GroupWidth(n), rows = q.Rows;
        var negErrors = new float[rowCount * block]; // −(w − ŵ)/U_ii for the current block, [rowCount, block]
        var grids = new QuantGrid[rowCount];
        for (int i1 = 0; i1 < n; i1 += block)
        {
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
                var uTail = u.AsSpan(i * n + i + 1, i2 - i - 1);
                for (int r = 0; r < rowCount; r++)
                {
                    int row = r0 + r;
                    var grid = fitGroupsOnTheWay ? grids[r] : upfront![column / groupSize * rows + row];
                    float value = wp[row * n + i];
                    int code = grid.Code(value);
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
                    u.AsSpan(i1 * n + i2), n, rowCount, n - i2, i2 - i1);
        }
    }
}
