namespace LlmShrink.Compression.LowRank;

/// <summary>
/// How many singular directions each matrix of a block keeps when the block's linears must lose a fraction of their
/// parameters. <see cref="Uniform"/> gives every matrix the same fraction. <see cref="FromSpectra"/> spends the block's
/// budget where its spectra say it buys the most (after SVD-LLM V2, Wang et al. 2025, §3.1, which sets per-matrix ratios
/// from the truncation loss of the whitened spectrum): every direction costs m + n values and is worth its share
/// σᵢ²/Σσ² of its matrix's energy weighted by the matrix's size mn — the planner's proxy, a parameter-weighted relative
/// output error. Unweighted shares were measured worse than uniform ranks (tinylit-8m, svd-llm at 40 %: perplexity 104.2
/// against 92.7): they trade a point of error in a small k_proj against a point in down_proj, three times its size.
/// Directions are bought greedily, best value per value stored first; since σ is descending, each matrix's next
/// direction is worth no more than its last, so greedy buys a prefix of every spectrum. <see cref="FromLosses"/> trades
/// between depths as V2 itself does, within each layer type across the whole model, from a survey of every block taken
/// before the first is compressed; the planner (<c>auto</c>) trades with measured KL instead.
/// </summary>
public static class RankAllocation
{
    /// <summary>The rank of every matrix at <paramref name="ratio"/> (<see cref="LowRankFactors.RankForRatio"/>).</summary>
    public static int Uniform(int rows, int columns, double ratio) => LowRankFactors.RankForRatio(rows, columns, ratio);

    /// <summary>
    /// Ranks for <paramref name="spectra"/> that together store at most (1 − <paramref name="ratio"/>) of their Σ mn values.
    /// A matrix whose share reaches its break-even rank is better left dense (it then costs mn and loses nothing); its
    /// entry is null.
    /// </summary>
    public static int?[] FromSpectra(IReadOnlyList<WeightSpectrum> spectra, double ratio)
    {
        if (!(ratio > 0 && ratio < 1)) throw new ArgumentOutOfRangeException(nameof(ratio), $"ratio {ratio} is outside (0, 1)");
        double budget = (1 - ratio) * spectra.Sum(s => (double)s.Rows * s.Columns);
        var rank = new int[spectra.Count];
        var dense = new bool[spectra.Count];
        double spent = 0;
        for (int i = 0; i < spectra.Count; i++) { rank[i] = 1; spent += spectra[i].Rows + spectra[i].Columns; }

        // Value per stored value of matrix i's next step: one more direction, or, when that would reach break-even, the
        // rest of its energy for the remaining mn − r(m + n); energy in units of Σσ²/mn, so a share counts by the matrix's size.
        (double Value, double Cost) Next(int i)
        {
            var s = spectra[i];
            int r = rank[i], width = s.Rows + s.Columns;
            double energy = (s.Energy > 0 ? s.Energy : 1) / ((double)s.Rows * s.Columns);
            if (LowRankFactors.Pays(r + 1, s.Rows, s.Columns))
                return (s.SingularValues[r] * s.SingularValues[r] / energy, width);
            return (s.TruncationLoss(r) / energy, (double)s.Rows * s.Columns - (double)r * width);
        }

        var queue = new PriorityQueue<int, double>();
        for (int i = 0; i < spectra.Count; i++) Enqueue(i);
        while (queue.TryDequeue(out int best, out _))
        {
            var (_, cost) = Next(best);
            if (spent + cost > budget) break;
            spent += cost;
            if (LowRankFactors.Pays(rank[best] + 1, spectra[best].Rows, spectra[best].Columns)) { rank[best]++; Enqueue(best); }
            else dense[best] = true;
        }
        return [.. Enumerable.Range(0, spectra.Count).Select(i => dense[i] ? (int?)null : rank[i])];

        void Enqueue(int i)
        {
            var (value, cost) = Next(i);
            if (rank[i] < Math.Min(spectra[i].Rows, spectra[i].Columns)) queue.Enqueue(i, -value / cost);
        }
    }

    /// <summary>
    /// SVD-LLM V2's heterogeneous ratios (Wang et al. 2025, §3.1, Algorithm 1) for a group of matrices of one type, one per
    /// depth, given each one's theoretical truncation loss L_i at the uniform <paramref name="ratio"/> (the whitened tail
    /// Σ_{j ≥ r} σⱼ², in the paper's unit: the output error summed over the calibration tokens). The paper takes the log of
    /// the losses to compress their spread and gives each matrix the fraction ratio·|G|·(1/log L_i) / Σ_j (1/log L_j) of
    /// its parameters to remove: inversely to its loss, averaging the uniform ratio, so a group of equal shapes removes as
    /// many parameters as uniform ranks would. Here log(1 + L_i): the same for the paper's magnitudes (L ≫ 1), and a loss
    /// below one unit (a tiny calibration set, an exactly low-rank matrix) still ranks below every larger one instead of
    /// flipping the sign. Shapes that differ (a structurally pruned model) are weighted by their parameters, so the group
    /// removes ratio·Σ mn. A fraction that would leave less than rank 1 is capped there and its excess spread over the rest.
    /// </summary>
    /// <returns>The fraction of each matrix's parameters to remove (<see cref="LowRankFactors.RankForRatio"/> turns it into a rank).</returns>
    public static double[] FromLosses(IReadOnlyList<(int Rows, int Columns, double Loss)> matrices, double ratio)
    {
        if (!(ratio > 0 && ratio < 1)) throw new ArgumentOutOfRangeException(nameof(ratio), $"ratio {ratio} is outside (0, 1)");
        int count = matrices.Count;
        var weight = new double[count];
        var parameters = new double[count];
        var cap = new double[count];
        for (int i = 0; i < count; i++)
        {
            var (rows, columns, loss) = matrices[i];
            if (!(loss >= 0 && double.IsFinite(loss))) throw new ArgumentException($"truncation loss {loss} of matrix {i} is not a finite non-negative number", nameof(matrices));
            weight[i] = 1 / Math.Log(1 + loss); // +∞ for a matrix that loses nothing: it is pinned at its cap below
            parameters[i] = (double)rows * columns;
            cap[i] = Math.Max(0, 1 - 1 / LowRankFactors.BreakEvenRank(rows, columns));
        }
        // Water-filling: the free fractions are scaled so the group removes ratio·Σ mn; one above its cap is pinned there.
        var result = new double[count];
        var pinned = new bool[count];
        for (int i = 0; i < count; i++)
            if (double.IsInfinity(weight[i])) (result[i], pinned[i]) = (cap[i], true);
        double target = ratio * parameters.Sum();
        while (true)
        {
            double remaining = target, freeWeight = 0;
            for (int i = 0; i < count; i++)
                if (pinned[i]) remaining -= result[i] * parameters[i];
                else freeWeight += weight[i] * parameters[i];
            if (freeWeight == 0) break;
            double scale = Math.Max(0, remaining / freeWeight);
            bool capped = false;
            for (int i = 0; i < count; i++)
                if (!pinned[i] && scale * weight[i] > cap[i]) (result[i], pinned[i], capped) = (cap[i], true, true);
            if (capped) continue;
            for (int i = 0; i < count; i++)
                if (!pinned[i]) result[i] = scale * weight[i];
            break;
        }
        return result;
    }
}
