using LlmShrink.Formats;
using LlmShrink.Planning;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>Choosing the GGUF embeddings' type on top of the layers' knapsack is exact: it matches brute force over layers × types.</summary>
public class EmbeddingPlanTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void MatchesBruteForceOverLayersAndEmbeddingTypes(int seed)
    {
        var random = new Random(seed);
        List<IReadOnlyList<Option>> layers = [.. Enumerable.Range(0, 4).Select(_ => (IReadOnlyList<Option>)[.. Enumerable.Range(0, 4)
            .Select(_ => new Option(random.Next(1, 60), Math.Round(random.NextDouble() * 5, 3)))])];
        var embeddings = EmbeddingPlan.Types.Take(4).Select(t => new EmbeddingOption(t, t, random.Next(1, 80), Math.Round(random.NextDouble() * 5, 3))).ToList();
        var plans = new List<(long Cost, double Loss)> { (0, 0) };
        foreach (var group in layers) plans = [.. plans.SelectMany(p => group.Select(o => (p.Cost + o.Cost, p.Loss + o.Loss)))];
        var all = plans.SelectMany(p => embeddings.Select(e => (Cost: p.Cost + e.Bytes, Loss: p.Loss + e.Kl))).ToList();
        var solver = new MultipleChoiceKnapsack(layers);

        for (long budget = all.Min(p => p.Cost); budget <= all.Max(p => p.Cost); budget += 7)
        {
            var (plan, embedding) = EmbeddingPlan.WithinCost(solver, embeddings, budget)!.Value;
            Assert.True(plan.Cost + embedding.Bytes <= budget);
            Assert.Equal(all.Where(p => p.Cost <= budget).Min(p => p.Loss), plan.Loss + embedding.Kl, 9);
        }
        Assert.Null(EmbeddingPlan.WithinCost(solver, embeddings, all.Min(p => p.Cost) - 1));
        foreach (double maxLoss in new[] { 4.0, 8, 12, 20 })
        {
            var feasible = all.Where(p => p.Loss <= maxLoss).ToList();
            var found = EmbeddingPlan.WithinLoss(solver, embeddings, maxLoss);
            if (feasible.Count == 0) { Assert.Null(found); continue; }
            Assert.Equal(feasible.Min(p => p.Cost), found!.Value.Layers.Cost + found.Value.Embedding.Bytes);
            Assert.True(found.Value.Layers.Loss + found.Value.Embedding.Kl <= maxLoss + 1e-9);
        }
    }
}
