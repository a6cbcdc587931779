namespace LlmShrink.Compression.Pruning;

/// <summary>
/// Wanda (Sun, Liu, Bair, Kolter 2023, "A Simple and Effective Pruning Approach for Large Language Models"): the score
/// of a weight is S_ij = |W_ij| · ‖X_j‖₂ (Eq. 1), its magnitude times the norm of the input it multiplies over the
/// calibration tokens, so a small weight on an outlier input channel is kept. Compared within each output row (§3: per
/// output beats per layer for LLMs) or, for N:M, within each group of M inputs of a row. No weight update, no Hessian.
/// </summary>
public static class Wanda
{
    /// <summary>Zeroes the pruned weights of W [rows, columns] in place; returns the keep-mask [rows, columns] (true = kept).</summary>
    /// <param name="columnNorms">
    /// ‖X_j‖₂ of every input j, in any common positive scale (only the ranking within a row matters): e.g. sqrt of the
    /// mean x_j², or sqrt(H_jj) of GPTQ's H = 2XXᵀ/n.
    /// </param>
    /// <param name="sparsity">Fraction pruned from every row; required for unstructured, implied (1 − N/M) for N:M.</param>
    public static bool[] Prune(Span<float> w, int rows, int columns, ReadOnlySpan<float> columnNorms, SparsityPattern pattern,
        double? sparsity = null)
    {
        if (w.Length != rows * columns || columnNorms.Length != columns)
            throw new ArgumentException($"Wanda: W must be {rows}×{columns} and the norms {columns} long");
        foreach (float norm in columnNorms)
            if (!(norm >= 0 && float.IsFinite(norm))) throw new ArgumentException($"Wanda: input norm {norm} is not a finite non-negative number");
        double fraction = pattern.Resolve(sparsity, columns, "Wanda");
        return RowPruning.PruneByScore(w, rows, columns, columnNorms, pattern, fraction);
    }
}
