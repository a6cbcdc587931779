namespace LlmShrink.Compression.Pruning;

/// <summary>
/// How much a block's output can lose when an MLP channel or an attention head group is removed, from calibration
/// activations (no gradients): channel j contributes x_j·W[:, j] to the block's output through the layer reading it
/// (down_proj, o_proj), so ‖X_j‖₂·‖W[:, j]‖₂ bounds its share of ‖XWᵀ‖ (the structured form of Wanda's score, as in
/// Wanda-sp / FLAP; Minitron ranks by the activation norm alone, which the weight norm refines when columns differ in scale).
/// </summary>
public static class StructuredImportance
{
    /// <summary>‖X_j‖₂·‖W[:, j]‖₂ for every input j of W [rows, columns]; <paramref name="columnNorms"/> = ‖X_j‖₂ up to a common factor.</summary>
    public static double[] ColumnScores(ReadOnlySpan<float> w, int rows, int columns, ReadOnlySpan<float> columnNorms)
    {
        var squares = new double[columns];
        for (int r = 0; r < rows; r++)
        {
            var row = w.Slice(r * columns, columns);
            for (int j = 0; j < columns; j++) squares[j] += (double)row[j] * row[j];
        }
        var scores = new double[columns];
        for (int j = 0; j < columns; j++) scores[j] = columnNorms[j] * Math.Sqrt(squares[j]);
        return scores;
    }

    /// <summary>The sum of the scores of each run of <paramref name="width"/> consecutive columns (a head group's o_proj columns).</summary>
    public static double[] GroupScores(double[] columnScores, int width)
    {
        var groups = new double[columnScores.Length / width];
        for (int j = 0; j < columnScores.Length; j++) groups[j / width] += columnScores[j];
        return groups;
    }

    /// <summary>The <paramref name="count"/> lowest-scoring indices (ties: the lower index goes first).</summary>
    public static int[] Lowest(double[] scores, int count) =>
        [.. Enumerable.Range(0, scores.Length).OrderBy(i => scores[i]).ThenBy(i => i).Take(count).Order()];
}
