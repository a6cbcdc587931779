using System.Numerics.Tensors;
using LlmShrink.Formats;
using LlmShrink.LinearAlgebra;

namespace LlmShrink.Compression.Quantization;

/// <summary>What <see cref="GgmlGptq"/> returns.</summary>
/// <param name="Blocks">The rows as ggml blocks, row-major: row r is bytes [r·rowBytes, (r + 1)·rowBytes).</param>
/// <param name="Weights">Ŵ, row-major [rows, columns]: the values GPTQ rounded to, which <paramref name="Blocks"/> decode to bit for bit.</param>
public sealed record GgmlGptqResult(byte[] Blocks, float[] Weights);

/// <summary>
/// GPTQ (Frantar et al. 2022, Algorithm 1) with a llama.cpp block type as its grid. Columns are walked in order, each
/// rounding error e = (w − ŵ)/U_ii spread over the columns not yet visited through row i of U, the upper Cholesky factor
/// of H⁻¹ (lazy batches, as <see cref="Gptq"/>). When the walk reaches a block (256 columns for a K-quant, 32 for the
/// legacy types), each row's block is encoded by llama.cpp's importance-weighted quantizer
/// (<see cref="GgmlQuantizers.Quantize"/> with the input importance mean x_j²) from the weights as GPTQ has updated them
/// so far — GPTQ's groups fitted on the way, with the block's fp16 and 6/8-bit scales as the group's grid. Every weight of
/// the block is then re-rounded, in walk order, to the nearest value its sub-block's stored scales can represent
/// (<see cref="GgmlBlockLevels.Grid"/>), and that level is written into the block's bits, so the block stays a llama.cpp
/// block and decodes to exactly the values the walk used. Act-order is not offered: a block's columns must be walked
/// together, which a permutation of the columns would break. Rows are independent given U and run in parallel chunks.
/// </summary>
public static class GgmlGptq
{
    const int RowChunk = 128;
    /// <summary>
    /// Columns per lazy batch: a multiple of every block size, so a block starts either at a batch start (every earlier
    /// error already applied to it) or inside a batch whose in-batch updates reach it at once.
    /// </summary>
    const int LazyBatch = 256;

    /// <param name="w">Weight W, row-major [rows, columns]; left unchanged.</param>
    /// <param name="hessian">H [columns, columns] (<see cref="HessianAccumulator.ToHessian"/>), used as workspace: garbage afterwards.</param>
    /// <param name="importance">Per input column, the weight of its squared error in the blocks' own fit (llama.cpp's imatrix, mean x_j²).</param>
    /// <param name="keep">
    /// Optional keep-mask [rows, columns] from an earlier pruning: a pruned weight counts as 0 in its block's fit and takes
    /// the level nearest 0 (exactly 0 in the symmetric types), its error spread like any other.
    /// </param>
    /// <param name="percentDamp">λ = percentDamp · mean(diag H) is added to H's diagonal before inverting (GPTQ's 1 %).</param>
    public static GgmlGptqResult QuantizeConsumingHessian(ReadOnlySpan<float> w, int rows, int columns, double[] hessian, TensorType type,
        ReadOnlySpan<float> importance, bool[]? keep = null, double percentDamp = 0.01)
    {
        if (!GgmlBlockLevels.Supports(type)) throw new ArgumentException($"GPTQ has no grid for {type}", nameof(type));
        int blockElements = TensorTypes.BlockElements(type);
        if (w.Length != (long)rows * columns || hessian.Length != (long)columns * columns || importance.Length != columns || (keep != null && keep.Length != w.Length))
            throw new ArgumentException($"GPTQ on {type}: W and the keep-mask must be {rows}×{columns}, H {columns}×{columns}, the importance {columns} long");
        if (columns % blockElements != 0) throw new ArgumentException($"GPTQ on {type}: {columns} columns is not a whole number of blocks of {blockElements}");
        int n = columns;
        var weights = w.ToArray(); // the copy GPTQ updates, and returns as Ŵ
        var imp = importance.ToArray();
        InverseHessianFactor.NeutralizeDeadInputs(hessian, weights, rows, n);
        InverseHessianFactor.DampenAndFactor(hessian, n, percentDamp);

        int rowBytes = checked((int)TensorTypes.ByteCount(type, n));
        var blocks = new byte[(long)rows * rowBytes];
        Parallel.For(0, (rows + RowChunk - 1) / RowChunk, chunk =>
        {
            int r0 = chunk * RowChunk, count = Math.Min(RowChunk, rows - r0);
            QuantizeRows(weights, InverseHessianFactor.Float32(hessian, n), n, r0, count, type, imp, keep, blocks, rowBytes);
        });
        return new GgmlGptqResult(blocks, weights);
    }

    static void QuantizeRows(float[] wp, Span<float> u, int n, int r0, int rowCount, TensorType type, float[] importance,
        bool[]? keep, byte[] blocks, int rowBytes)
    {
        int blockElements = TensorTypes.BlockElements(type), blockBytes = TensorTypes.BlockBytes(type);
        int subElements = GgmlBlockLevels.SubBlockElements(type), subBlocks = blockElements / subElements;
        var negErrors = new float[rowCount * LazyBatch]; // −(w − ŵ)/U_ii for the current batch, [rowCount, LazyBatch]
        var grids = new GgmlLevelGrid[rowCount * subBlocks]; // the current block's sub-block grids, per row
        var fitted = new float[blockElements];
        for (int i1 = 0; i1 < n; i1 += LazyBatch)
        {
            int i2 = Math.Min(i1 + LazyBatch, n);
            for (int i = i1; i < i2; i++)
            {
                int inBlock = i % blockElements;
                if (inBlock == 0)
                    for (int r = 0; r < rowCount; r++)
                    {
                        int row = r0 + r;
                        wp.AsSpan(row * n + i, blockElements).CopyTo(fitted);
                        if (keep != null)
                            for (int j = 0; j < blockElements; j++) if (!keep[row * n + i + j]) fitted[j] = 0;
                        var block = blocks.AsSpan(row * rowBytes + i / blockElements * blockBytes, blockBytes);
                        GgmlQuantizers.Quantize(type, fitted, block, importance.AsSpan(i, blockElements));
                        for (int s = 0; s < subBlocks; s++) grids[r * subBlocks + s] = GgmlBlockLevels.Grid(type, block, s);
                    }
                float d = u[i * n + i];
                var uTail = u.Slice(i * n + i + 1, i2 - i - 1);
                for (int r = 0; r < rowCount; r++)
                {
                    int row = r0 + r, at = row * n + i;
                    var grid = grids[r * subBlocks + inBlock / subElements];
                    float value = wp[at];
                    int level = grid.Nearest(keep == null || keep[at] ? value : 0f);
                    GgmlBlockLevels.SetLevel(type, blocks.AsSpan(row * rowBytes + i / blockElements * blockBytes, blockBytes), inBlock, level);
                    float rounded = grid.Value(level);
                    wp[at] = rounded;
                    float error = (value - rounded) / d;
                    negErrors[r * LazyBatch + i - i1] = -error;
                    // W[row, i+1..i2) −= error · U[i, i+1..i2): the in-batch part of the OBS update.
                    var wTail = wp.AsSpan(at + 1, i2 - i - 1);
                    TensorPrimitives.MultiplyAdd(uTail, -error, wTail, wTail);
                }
            }
            // Lazy batch update of all later columns: W[:, i2..n) += (−E) · U[i1..i2, i2..n).
            if (i2 < n)
                DenseKernels.MultiplyAdd<float>(wp.AsSpan(r0 * n + i2), n, negErrors, LazyBatch,
                    u[(i1 * n + i2)..], n, rowCount, n - i2, i2 - i1);
        }
    }
}
