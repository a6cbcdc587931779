using LlmShrink.Analysis;
using LlmShrink.Model;

namespace LlmShrink.Compression.LowRank;

/// <summary>
/// SVD-LLM V2's rank allocation over a whole model (Wang et al. 2025, §3.1): each targeted matrix's theoretical truncation
/// loss at the uniform ratio — the whitened tail Σ_{i ≥ r} σᵢ² of W·chol(XXᵀ), which is exactly its output error on the
/// calibration inputs (<see cref="InputTransform"/>) — measured on the float model by a survey before the first block is
/// compressed, then each layer type's ratio spread over its depths by <see cref="RankAllocation.FromLosses"/>.
/// The losses are the float model's, as V2 computes them; the blocks are then compressed on the sequential pipeline's
/// activations, as svd-llm's are.
/// <para>The log in V2's formula makes the allocation depend on the loss's unit, here (as in the paper) the error summed
/// over the calibration tokens: the more tokens, the milder the spread. Measured on tinylit-8m at ratio 0.4: with 128 × 256
/// tokens o_proj's ranks run from 38 (blocks 0–1) to 102 (block 7), uniform 76; with 8 × 128 tokens blocks 0–1 get rank 1.</para>
/// </summary>
public static class LossAllocation
{
    /// <summary>The rank of every targeted block linear, by (block, role), for a model-wide <paramref name="ratio"/>.</summary>
    /// <param name="dampening">svd-llm's relative dampening of XXᵀ before its Cholesky factorization.</param>
    public static Dictionary<(int Layer, LinearRole Role), int> Ranks(ModelSurvey survey, double ratio, double dampening)
    {
        var losses = new List<(int Layer, LinearRole Role, int Rows, int Columns, double Loss)>();
        survey.ForEachBlock(StatisticsNeeds.Hessian, block =>
        {
            foreach (var role in block.Targets)
            {
                var (rows, columns) = block.Shape(role);
                var site = block.Statistics(LinearRoles.Site(role));
                var whitening = InputTransform.Whitening(site.Hessian(), columns, dampening);
                // Values only: the loss needs σ, not the factors (the block's compression takes its own SVD later).
                var sigma = GramSpectrum.SingularValues(whitening.Apply(block.Weights(role), rows), rows, columns);
                double tail = sigma.Skip(RankAllocation.Uniform(rows, columns, ratio)).Sum(s => s * s);
                // H = (2/N)·XXᵀ, so the tail is (2/N)·‖(W − W′)X‖_F²: in the paper's unit, the error summed over the N tokens.
                losses.Add((block.Layer, role, rows, columns, tail * site.Tokens / 2));
            }
        });
        var ranks = new Dictionary<(int, LinearRole), int>();
        foreach (var type in losses.GroupBy(l => l.Role))
        {
            var group = type.ToList();
            var ratios = RankAllocation.FromLosses([.. group.Select(l => (l.Rows, l.Columns, l.Loss))], ratio);
            for (int i = 0; i < group.Count; i++) ranks[(group[i].Layer, group[i].Role)] = LowRankFactors.RankForRatio(group[i].Rows, group[i].Columns, ratios[i]);
        }
        return ranks;
    }
}
