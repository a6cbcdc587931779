namespace LlmShrink.Compression.Pruning;

/// <summary>
/// OWL (Yin et al. 2023, "Outlier Weighed Layerwise Sparsity (OWL): A Missing Secret Sauce for Pruning LLMs to High
/// Sparsity"): layers differ in how many outlier features they carry, and pruning them uniformly destroys those outliers
/// where they are densest. A layer's outlier ratio (LOD, layerwise outlier distribution) is the share of its Wanda scores
/// |W_ij|·‖X_j‖₂ above M times their mean; layers with more outliers get a lower sparsity, the others a higher one, so
/// that the average stays the target.
/// </summary>
public static class OutlierWeightedSparsity
{
    /// <summary>
    /// The fraction of the Wanda scores |W_ij|·‖X_j‖₂ of all <paramref name="matrices"/> together greater than <paramref name="m"/> ×
    /// their common mean: the outlier ratio of a layer made of several linears, pooled as the paper's reference code pools a
    /// decoder block's (one mean over every linear's scores, not a ratio per linear averaged).
    /// </summary>
    /// <param name="matrices">
    /// Each linear's W [Rows, Columns] and ‖X_j‖₂ of its inputs, in any positive scale common to all the matrices (as for
    /// <see cref="Wanda.Prune"/>, where only a row's ranking matters; here the matrices share one mean).
    /// </param>
    /// <param name="m">The outlier threshold M (the paper tunes it per model; 5 is its usual choice).</param>
    public static double OutlierRatio(IReadOnlyList<(float[] W, int Rows, int Columns, float[] ColumnNorms)> matrices, double m = 5)
    {
        if (matrices.Count == 0) throw new ArgumentException("OWL: no matrices to score");
        double sum = 0;
        long count = 0;
        foreach (var (w, rows, columns, norms) in matrices)
        {
            if (w.Length != rows * columns || norms.Length != columns)
                throw new ArgumentException($"OWL: W must be {rows}×{columns} and the norms {columns} long");
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < columns; c++) sum += Math.Abs(w[r * columns + c]) * (double)norms[c];
            count += w.Length;
        }
        double threshold = m * sum / count;
        long outliers = 0;
        foreach (var (w, rows, columns, norms) in matrices)
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < columns; c++)
                    if (Math.Abs(w[r * columns + c]) * (double)norms[c] > threshold) outliers++;
        return (double)outliers / count;
    }

    /// <summary>
    /// Per-layer sparsities S_l = S − c · (D_l − mean D), linear in the outlier ratios D_l, whose mean is the target S
    /// and which stay within [S − λ, S + λ]: c is the largest scale that keeps every layer in that band, so the layer
    /// furthest from the mean ratio sits on a bound. Where the ratios are spread evenly around their mean this is the
    /// paper's mapping (ratios normalized to [0, 2λ], then shifted to mean S); its reference code keeps the width 2λ even
    /// when the spread is lopsided, which can push one layer beyond S ± λ — the band the paper states — so here the scale
    /// shrinks instead. Equal ratios give every layer S.
    /// </summary>
    /// <param name="lambda">λ, the largest departure from the target (the paper tunes it; 0.08 is its usual choice).</param>
    public static double[] Allocate(IReadOnlyList<double> outlierRatios, double targetSparsity, double lambda = 0.08)
    {
        if (outlierRatios.Count == 0) throw new ArgumentException("OWL: no layers");
        if (!(lambda >= 0 && targetSparsity - lambda >= 0 && targetSparsity + lambda < 1))
            throw new ShrinkException($"OWL: target sparsity {targetSparsity} ± λ {lambda} must stay within [0, 1)");
        double mean = outlierRatios.Average();
        double widest = outlierRatios.Max(d => Math.Abs(d - mean));
        double scale = widest > 0 ? lambda / widest : 0;
        var sparsities = new double[outlierRatios.Count];
        for (int l = 0; l < sparsities.Length; l++)
            sparsities[l] = targetSparsity - scale * (outlierRatios[l] - mean);
        return sparsities;
    }
}
