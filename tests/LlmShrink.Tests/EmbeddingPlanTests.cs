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

/// <summary><see cref="EmbeddingPlan.Measure"/> on tinylit-8m, untied and with its embeddings tied to lm_head.</summary>
public class EmbeddingPlanMeasureTests
{
    [Fact]
    public void FinerTypesLoseLessTiedTablesLoseMoreAndTheModelIsLeftAsItWas()
    {
        using var dir = new TempDir();
        // The same weights with lm_head read from the embedding table (tinylit's own lm_head tensor is then unused).
        string tiedFolder = dir.File("tied");
        Directory.CreateDirectory(tiedFolder);
        foreach (var file in Directory.EnumerateFiles(SharedData.TinyLit).Where(f => Path.GetFileName(f) != "config.json"))
            File.CreateSymbolicLink(Path.Combine(tiedFolder, Path.GetFileName(file)), file);
        File.WriteAllText(Path.Combine(tiedFolder, "config.json"),
            File.ReadAllText(Path.Combine(SharedData.TinyLit, "config.json")).Replace("\"tie_word_embeddings\": false", "\"tie_word_embeddings\": true"));

        // Untied, the measurement is the lookup alone; tied, the table is lm_head too, so lm_head is rounded as well.
        var (untied, untiedLookup) = Measure(SharedData.TinyLit, tied: false);
        Assert.Equal(untiedLookup, untied[0].Kl, 12);
        var (tied, tiedLookup) = Measure(tiedFolder, tied: true);
        Assert.True(Math.Abs(tied[0].Kl - tiedLookup) > 0.1 * tiedLookup, $"tied Q2_K: {tied[0].Kl} with lm_head rounded, {tiedLookup} lookup alone");
    }

    /// <returns>The options, and the Q2_K KL of rounding the lookups alone (by hand).</returns>
    private static (IReadOnlyList<EmbeddingOption> Options, double LookupOnlyQ2K) Measure(string folder, bool tied)
    {
        using var model = Model.ModelLoader.Load(folder);
        Assert.Equal(tied, model.Config.TiedEmbeddings);
        using var transformer = new Model.Transformer(model);
        var random = new Random(3);
        int[][] windows = [[.. Enumerable.Range(0, 48).Select(_ => random.Next(model.Config.VocabSize))]];
        var kl = new HeldBackKl(windows, transformer);
        var head = transformer.LmHead;

        var options = EmbeddingPlan.Measure(model, transformer, kl);

        Assert.Equal(EmbeddingPlan.Types, options.Select(o => o.Stored));
        Assert.True(options.Zip(options.Skip(1)).All(p => p.First.Kl > p.Second.Kl && p.First.Bytes < p.Second.Bytes), string.Join(", ", options));
        Assert.Equal(4096L * 256 / 256 * 84, options[0].Bytes); // Q2_K: 84 bytes per 256 weights
        Assert.Same(head, transformer.LmHead);
        Assert.Null(transformer.EmbeddingRows);
        Assert.Equal(0, kl.Measure(transformer), 12);

        var table = model.Weights.Get(Model.TensorNames.Embedding);
        transformer.EmbeddingRows = (token, destination) =>
        {
            var row = new float[table.Columns];
            table.DequantizeRow(token, row);
            TensorEncoding.Round(TensorType.Q2_K, row).CopyTo(destination);
        };
        double lookupOnly = kl.Measure(transformer);
        transformer.EmbeddingRows = null;
        return (options, lookupOnly);
    }
}
