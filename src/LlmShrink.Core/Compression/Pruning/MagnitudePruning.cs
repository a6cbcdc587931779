namespace LlmShrink.Compression.Pruning;

/// <summary>
/// Magnitude pruning, the calibration-free baseline: the weights of smallest |W_ij| go. Ranked within each output
/// row (or each group of M inputs of a row for N:M) — Wanda's comparison group, so magnitude and Wanda differ only in
/// the score and compare the scores alone.
/// </summary>
public static class MagnitudePruning
{
    /// <summary>Zeroes the pruned weights of W [rows, columns] in place; returns the keep-mask [rows, columns] (true = kept).</summary>
    /// <param name="sparsity">Fraction pruned from every row; required for unstructured, implied (1 − N/M) for N:M.</param>
    public static bool[] Prune(Span<float> w, int rows, int columns, SparsityPattern pattern, double? sparsity = null)
    {
        if (w.Length != rows * columns) throw new ArgumentException($"magnitude pruning: W has {w.Length} values, not {rows}×{columns}");
        double fraction = pattern.Resolve(sparsity, columns, "magnitude pruning");
        var ones = new float[columns];
        Array.Fill(ones, 1f);
        return RowPruning.PruneByScore(w, rows, columns, ones, pattern, fraction);
    }
}
