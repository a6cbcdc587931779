using LlmShrink.Compression;
using LlmShrink.Compression.Recipes;
using LlmShrink.Evaluation;
using LlmShrink.Export;
using LlmShrink.Formats;
using LlmShrink.Model;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>Structured pruning on tinylit-8m: tensors shrink by the requested share, the result runs everywhere, and ShortGPT's choice beats the baselines.</summary>
public class StructuredPruningTests
{
    private const int Samples = 16, SequenceLength = 128, EvalChunks = 40;

    /// <summary>Compresses tinylit-8m into <paramref name="output"/> and scores it against the original on held-out text: (ppl, KL).</summary>
    private static (double Ppl, double Kl) CompressAndScore(string recipe, string output)
    {
        CompressionJob.Run(new CompressionRequest(SharedData.TinyLit, recipe, SharedData.Corpus("tinylit_calib.txt"), Samples, SequenceLength, Seed: 0, output));
        return Score(output);
    }

    private static (double Ppl, double Kl) Score(string folder)
    {
        using var model = ModelLoader.Load(folder);
        using var original = ModelLoader.Load(SharedData.TinyLit);
        using var transformer = new Transformer(model);
        using var reference = new Transformer(original);
        var tokenizer = model.RequireTokenizer();
        var tokens = tokenizer.Encode(File.ReadAllText(SharedData.Corpus("tinylit_eval.txt"))[..60000], addBos: true);
        var r = Perplexity.Evaluate(tokens, 256, PerplexityProtocol.LlamaCpp, tokenizer.BosId,
            new TransformerLogitModel(transformer, 256), new TransformerLogitModel(reference, 256), EvalChunks);
        return (r.Perplexity, r.MeanKlDivergence!.Value);
    }

    private static long Group(ModelStatistics s, params string[] names) => s.Groups.Where(g => names.Contains(g.Name)).Sum(g => g.Parameters);

    [Theory]
    [InlineData("ffn-20", 0.20)]
    [InlineData("heads-25", 0.25)]
    [InlineData("drop-blocks-25", 0.25)]
    public void Presets_remove_the_requested_share_and_the_result_loads_evaluates_and_exports(string preset, double share)
    {
        using var dir = new TempDir();
        var (ppl, kl) = CompressAndScore(preset, dir.File("out"));
        using var original = ModelLoader.Load(SharedData.TinyLit);
        using var pruned = ModelLoader.Load(dir.File("out"));
        var before = ModelStatistics.Of(original);
        var after = ModelStatistics.Of(pruned);
        string[] mlp = ["mlp.gate", "mlp.up", "mlp.down"], attention = ["attention.q", "attention.k", "attention.v", "attention.o"];
        string[] structure = preset switch { "ffn-20" => mlp, "heads-25" => attention, _ => [.. mlp, .. attention, "norms"] };
        long removedFromStructure = Group(before, structure) - Group(after, structure);
        double removed = preset.StartsWith("drop", StringComparison.Ordinal)
            ? 1 - (double)pruned.Config.NumLayers / original.Config.NumLayers
            : removedFromStructure / (double)Group(before, structure);
        Assert.InRange(removed, share - 0.01, share + 0.01);
        Assert.True(removedFromStructure > 0);
        Assert.True(pruned.Config.IsUniform); // uniform ratios → a standard Llama config.json
        Assert.True(double.IsFinite(ppl) && kl > 0 && kl < 1, $"{preset}: ppl {ppl}, KL {kl}");

        // GGUF (llama.cpp's llama architecture: uniform widths) computes what the folder computes.
        GgufExporter.Export(pruned, TensorType.F32, dir.File("pruned.gguf"));
        using var gguf = ModelLoader.Load(dir.File("pruned.gguf"));
        Assert.Equal(pruned.Config.NumLayers, gguf.Config.NumLayers);
        Assert.Equal(pruned.Config.IntermediateSize, gguf.Config.IntermediateSize);
        Assert.Equal(pruned.Config.NumKvHeads, gguf.Config.NumKvHeads);
        int[] tokens = [1, 450, 2143, 310, 278, 3186, 2989, 727, 471];
        var expected = ExportGgufTests.Logits(pruned, tokens);
        var actual = ExportGgufTests.Logits(gguf, tokens);
        for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], actual[i], 1e-3f);
    }

    [Fact]
    public void Block_influence_removes_blocks_better_than_the_last_ones_and_than_random_choices()
    {
        using var dir = new TempDir();
        string Recipe(string selection, int seed = 0) => $"modifiers:\n  - method: drop-blocks\n    fraction: 0.25\n    selection: {selection}\n    seed: {seed}\n";
        string File(string name, string yaml) { System.IO.File.WriteAllText(dir.File(name + ".yaml"), yaml); return dir.File(name + ".yaml"); }
        var influence = CompressAndScore(File("bi", Recipe("influence")), dir.File("bi"));
        var last = CompressAndScore(File("last", Recipe("last")), dir.File("last"));
        var random = Enumerable.Range(1, 3).Select(seed => CompressAndScore(File($"r{seed}", Recipe("random", seed)), dir.File($"r{seed}"))).ToList();
        Assert.True(influence.Kl < last.Kl, $"BI {influence} vs last {last}");
        Assert.True(influence.Kl < random.Average(r => r.Kl), $"BI {influence} vs random {string.Join(", ", random)}");
    }

    [Fact]
    public void Removed_heads_then_gptq_quantizes_the_narrower_layers_and_reloads_identically()
    {
        using var dir = new TempDir();
        var recipe = Compression.Recipes.Recipe.From("heads-then-gptq", [
            new ModifierSpec("prune-heads").With("fraction", 0.25),
            new ModifierSpec("prune-ffn").With("fraction", 0.2),
            new ModifierSpec("gptq").With("bits", 4).With("group_size", 32)]);
        using var compressed = TinyLitCompression.Run(recipe, dir.File("out"));
        var shape = compressed.Transformer.Config.Layer(0);
        Assert.Equal(new LayerShape(6, 3, 608), shape); // 8 heads in 4 KV groups → 3 groups; 768 channels → 608 (a multiple of 32)
        Assert.All(compressed.Transformer.Blocks, b => Assert.IsType<GptqLinear>(b.O));
        Assert.Equal(6 * 32, compressed.Transformer.Blocks[0].O.InFeatures);
        TinyLitCompression.AssertReloadsIdentically(compressed.Transformer, dir.File("out"));
    }

    [Theory]
    [InlineData("prune-heads", "fraction: 1", "fraction: 1 is outside (0, 1)")]
    [InlineData("prune-ffn", "fraction: 0", "fraction: 0 is outside (0, 1)")]
    [InlineData("drop-blocks", "", "fraction: required")]
    [InlineData("prune-heads", "targets: [lm_head]\n    fraction: 0.5", "cannot target lm_head")]
    public void Bad_structured_recipes_name_the_recipe_and_the_problem(string method, string parameters, string message)
    {
        var e = Assert.Throws<ShrinkException>(() => Compression.Recipes.Recipe.Parse($"modifiers:\n  - method: {method}\n    {parameters}\n", "bad", "bad.yaml"));
        Assert.Contains("bad.yaml", e.Message);
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void Removing_every_head_group_is_a_recipe_error_and_nothing_is_written()
    {
        using var dir = new TempDir();
        System.IO.File.WriteAllText(dir.File("all.yaml"), "modifiers:\n  - method: prune-heads\n    fraction: 0.9\n");
        var e = Assert.Throws<ShrinkException>(() => CompressionJob.Run(new CompressionRequest(SharedData.TinyLit, dir.File("all.yaml"),
            SharedData.Corpus("tinylit_calib.txt"), 2, 32, 0, dir.File("out"))));
        Assert.Contains("removes all 4 key/value heads", e.Message);
        Assert.False(Directory.Exists(dir.File("out")));
    }
}
