namespace LlmShrink.Compression.Pruning;

/// <summary>
/// Pruning by a score |W_ij| · s_j ranked within each output row (unstructured) or within each group of M inputs of
/// a row (N:M): the row-wise comparison group of Wanda (Sun et al. 2023, §3 "Comparison group"), shared by magnitude
/// pruning (every s_j = 1) and Wanda (s_j = ‖X_j‖₂), so the two differ only in the score.
/// </summary>
static class RowPruning
{
    /// <summary>Zeroes the pruned weights of W [rows, columns] in place; returns the keep-mask [rows, columns] (true = kept).</summary>
    public static bool[] PruneByScore(Span<float> w, int rows, int columns, ReadOnlySpan<float> columnScales,
        SparsityPattern pattern, double sparsity)
    {
        int groupWidth = pattern.IsNOfM ? pattern.M : columns;
        // Unstructured: round(sparsity · columns) per row, half to even.
        int prunedPerGroup = pattern.IsNOfM ? pattern.M - pattern.N : (int)Math.Round(sparsity * columns);
        var keep = new bool[rows * columns];
        var scores = new float[columns];
        var scratch = new float[2 * groupWidth];
        for (int r = 0; r < rows; r++)
        {
            var row = w.Slice(r * columns, columns);
            for (int c = 0; c < columns; c++) scores[c] = MathF.Abs(row[c]) * columnScales[c];
            var rowKeep = keep.AsSpan(r * columns, columns);
            for (int g = 0; g < columns; g += groupWidth)
                ScoreSelection.PruneSmallest(scores.AsSpan(g, groupWidth), prunedPerGroup, rowKeep.Slice(g, groupWidth), scratch);
            for (int c = 0; c < columns; c++)
                if (!rowKeep[c]) row[c] = 0;
        }
        return keep;
    }
}
