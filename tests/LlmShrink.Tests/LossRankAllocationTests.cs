using LlmShrink.Compression;
using LlmShrink.Compression.LowRank;
using LlmShrink.Compression.Methods;
using LlmShrink.Compression.Recipes;
using LlmShrink.Model;
using Xunit;
using Xunit.Abstractions;

namespace LlmShrink.Tests;

/// <summary>SVD-LLM V2's rank allocation (<c>allocation: loss</c>): the budget it keeps, the order it gives, and its recipe keys.</summary>
public class LossRankAllocationTests(ITestOutputHelper output)
{
    /// <summary>Parameters a matrix gives up at a ratio once the ratio is a whole rank (<see cref="LowRankFactors.RankForRatio"/>).</summary>
    private static double Removed(int rows, int columns, double ratio) =>
        (double)rows * columns - (double)LowRankFactors.RankForRatio(rows, columns, ratio) * (rows + columns);

    [Fact]
    public void Loss_ratios_keep_the_types_budget_and_give_higher_loss_matrices_more_rank()
    {
        // One layer type at eight depths (256×256, break-even rank 128), losses over four orders of magnitude.
        double[] losses = [2.1e5, 8.0e3, 4.4e6, 1.2e4, 9.9e5, 3.0e7, 6.5e4, 1.5e6];
        const double ratio = 0.4;
        var ratios = RankAllocation.FromLosses([.. losses.Select(l => (256, 256, l))], ratio);
        Assert.Equal(ratio, ratios.Average(), 12); // the paper's normalization: |G|·R·(1/log L_i)/Σ_j 1/log L_j averages R
        double budget = ratio * 8 * 256 * 256, removed = ratios.Sum(r => Removed(256, 256, r));
        Assert.InRange(removed - budget, 0, 8 * 512); // ranks round down: at most one rank step more per matrix
        var ranks = ratios.Select(r => LowRankFactors.RankForRatio(256, 256, r)).ToArray();
        var byLoss = Enumerable.Range(0, 8).OrderBy(i => losses[i]).ToArray();
        for (int k = 1; k < 8; k++) Assert.True(ranks[byLoss[k]] >= ranks[byLoss[k - 1]], $"loss {losses[byLoss[k]]} got rank {ranks[byLoss[k]]} < {ranks[byLoss[k - 1]]}");
        Assert.True(ranks[byLoss[^1]] > ranks[byLoss[0]] + 10, $"ranks {string.Join(", ", ranks)}");
        Assert.Equal(76, LowRankFactors.RankForRatio(256, 256, ratio)); // uniform, between the extremes
        output.WriteLine($"ranks by loss: {string.Join(", ", byLoss.Select(i => $"{losses[i]:E1} → {ranks[i]}"))}");
    }

    [Fact]
    public void A_matrix_that_loses_nothing_is_capped_at_rank_one_and_unequal_shapes_share_the_budget_by_size()
    {
        (int, int, double)[] group = [(128, 256, 0), (128, 256, 5e4), (96, 256, 5e4), (128, 256, 2e6)];
        const double ratio = 0.5;
        var ratios = RankAllocation.FromLosses(group, ratio);
        Assert.Equal(1, LowRankFactors.RankForRatio(128, 256, ratios[0]));
        Assert.Equal(1 - 1 / LowRankFactors.BreakEvenRank(128, 256), ratios[0], 12);
        Assert.Equal(ratios[1], ratios[2], 12); // the same loss, the same fraction whatever the shape
        double parameters = group.Sum(g => (double)g.Item1 * g.Item2);
        Assert.Equal(ratio * parameters, group.Select((g, i) => ratios[i] * g.Item1 * g.Item2).Sum(), 6);
        Assert.True(ratios[3] < ratios[1]);
    }

    [Fact]
    public void Allocation_keys_round_trip_through_recipe_yaml()
    {
        var v2 = Recipe.Load("svd-llm-v2-40").Modifiers.Single();
        Assert.Equal("svd-llm", v2.Spec.Method);
        Assert.Equal("loss", v2.Spec.Parameters["allocation"]);
        Assert.Equal("0.4", v2.Spec.Parameters["ratio"]);
        Assert.True(v2.Method.SurveysModel);
        var fwsvd = Recipe.Load("fwsvd-20").Modifiers.Single();
        Assert.Equal(("fwsvd", "0.2"), (fwsvd.Method.Name, fwsvd.Spec.Parameters["ratio"]));
        Assert.True(fwsvd.Method.SurveysModel);
        Assert.False(Recipe.Load("svd-llm-40").Modifiers.Single().Method.SurveysModel); // uniform stays the default

        var built = Recipe.From("round-trip", [v2.Spec, fwsvd.Spec.With("allocation", "spectrum").With("bits", 8).With("group_size", 32)]);
        var again = Recipe.Parse(built.Text, "again", "again.yaml");
        Assert.Equal(built.Modifiers.Select(m => m.Spec.Parameters.OrderBy(kv => kv.Key)), again.Modifiers.Select(m => m.Spec.Parameters.OrderBy(kv => kv.Key)));
        Assert.Equal("spectrum", again.Modifiers[1].Spec.Parameters["allocation"]);
        Assert.Equal(["svd-llm", "fwsvd"], again.Modifiers.Select(m => m.Method.Name));
    }

    [Theory]
    [InlineData("svd", "ratio: 0.4\n    allocation: loss", "allocation: loss compares whitened truncation losses (SVD-LLM V2): svd-llm only")]
    [InlineData("svd-llm", "rank: 8\n    allocation: loss", "allocation: loss shares a parameter budget: give ratio, not rank")]
    [InlineData("svd-llm", "ratio: 0.4\n    allocation: depth", "'depth' is not one of uniform, spectrum, loss")]
    public void Bad_allocations_are_one_line_errors(string method, string parameters, string message)
    {
        var e = Assert.Throws<ShrinkException>(() => Recipe.Parse($"modifiers:\n  - method: {method}\n    targets: [Linear]\n    {parameters}\n", "bad", "bad.yaml"));
        Assert.Contains(message, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    /// <summary>
    /// On tinylit-8m (8 × 128 calibration tokens): the survey gives each layer type's depths different ranks, the block
    /// linears store no more than uniform ranks would plus one rank step per matrix, and none stays dense.
    /// </summary>
    [Fact]
    public void On_tinylit_loss_allocation_varies_ranks_over_depth_within_the_uniform_budget()
    {
        using var allocated = TinyLitCompression.Run(Recipe.Load("svd-llm-v2-40"), output: null);
        var blocks = allocated.Transformer.Blocks;
        long stored = 0, uniform = 0, step = 0;
        foreach (var role in LinearRoles.All)
        {
            var layers = blocks.Select(b => Assert.IsType<LowRankLinear>(LinearRoles.Get(b, role))).ToList(); // every rank pays
            var ranks = layers.Select(l => l.Rank).ToList();
            output.WriteLine($"{LinearRoles.ModuleName(role)}: ranks {string.Join(" ", ranks)} (uniform {RankAllocation.Uniform(layers[0].OutFeatures, layers[0].InFeatures, 0.4)})");
            Assert.True(ranks.Max() > ranks.Min(), $"{LinearRoles.ModuleName(role)}: every depth got rank {ranks[0]}");
            foreach (var l in layers)
            {
                int width = l.OutFeatures + l.InFeatures;
                stored += (long)l.Rank * width;
                uniform += (long)RankAllocation.Uniform(l.OutFeatures, l.InFeatures, 0.4) * width;
                step += width;
            }
        }
        output.WriteLine($"block linears store {stored:N0} values; uniform ranks {uniform:N0}; one rank step per matrix {step:N0}");
        Assert.InRange(stored, uniform - step, uniform + step);
    }
}
