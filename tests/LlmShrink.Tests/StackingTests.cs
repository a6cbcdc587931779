using LlmShrink.Compression;
using LlmShrink.Compression.Methods;
using LlmShrink.Compression.Quantization;
using LlmShrink.Compression.Recipes;
using LlmShrink.Model;
using LlmShrink.Representations;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>Modifiers that target the same layer stack in recipe order; a candidate can be tried without being committed.</summary>
public class StackingTests
{
    /// <summary>Calibration samples (× 256 tokens) and evaluation chunks (× 256 tokens), as in <see cref="PruningMethodTests"/>.</summary>
    private const int Samples = 32, Chunks = 40;

    [Fact]
    public void Smoothquant_then_gptq_loses_less_than_smoothquant_alone()
    {
        var (_, _, klSmooth, _) = CompressionTests.Compress("w8a8-smoothquant", Samples, Chunks);
        var (_, _, klStacked, _) = CompressionTests.Compress("w8a8-smoothquant-gptq", Samples, Chunks);
        Assert.True(klStacked < klSmooth, $"KL smoothquant+gptq {klStacked:E3} vs smoothquant {klSmooth:E3}");
    }

    [Fact]
    public void Stacked_w8a8_layers_are_int8_and_reload_identically()
    {
        using var dir = new TempDir();
        using var stacked = TinyLitCompression.Run(Recipe.Load("w8a8-smoothquant-gptq"), dir.File("out"));
        // One report line per modifier and layer: smoothquant only smooths, gptq stores.
        Assert.Equal(7 * 8, stacked.Result.Layers.Count(l => l.Method == "gptq"));
        Assert.All(stacked.Transformer.Blocks, b => Assert.All(b.Linears, l => Assert.IsType<W8A8Linear>(l)));
        // int8 weights and one F32 scale per output row, nothing else.
        var linears = stacked.Transformer.Blocks.SelectMany(b => b.Linears).ToList();
        double expected = linears.Sum(l => 8.0 * l.OutFeatures * l.InFeatures + 32.0 * l.OutFeatures) / linears.Sum(l => (double)l.OutFeatures * l.InFeatures);
        Assert.Equal(expected, stacked.Result.BitsPerWeight, 9);
        TinyLitCompression.AssertReloadsIdentically(stacked.Transformer, dir.File("out"));
    }

    /// <summary>
    /// AWQ on q_proj alone rescales its whole input site, so k_proj and v_proj, pruned earlier and not quantized, change
    /// after their pruned layers were built: the block's end must run them as they are written (rescaled, F32), not as
    /// they were pruned (a runtime layer kept from the pruning step would leave the in-memory model off the checkpoint).
    /// </summary>
    [Fact]
    public void Pruned_layers_rescaled_by_a_later_fold_run_as_written()
    {
        using var dir = new TempDir();
        using var run = TinyLitCompression.Run(CompressionTests.LoadRecipe("""
            modifiers:
              - method: wanda
                sparsity: 0.5
              - method: awq
                bits: 4
                group_size: 128
                targets: [q_proj]
            """), dir.File("out"));
        Assert.Contains(run.Result.Layers, l => l.Module.EndsWith("k_proj", StringComparison.Ordinal) && l.Method == "wanda");
        TinyLitCompression.AssertReloadsIdentically(run.Transformer, dir.File("out"));
    }

    [Fact]
    public void Awq_then_gptq_stores_gptq_layers_over_the_awq_scaled_weights()
    {
        const string recipe = """
            modifiers:
              - method: awq
                targets: [Linear]
                bits: 3
                group_size: 64
              - method: gptq
                targets: [Linear]
                bits: 3
                group_size: 64
            """;
        var (_, _, klGptq, _) = CompressionTests.Compress(recipe[(recipe.IndexOf("  - method: gptq", StringComparison.Ordinal))..].Insert(0, "modifiers:\n"), Samples, Chunks);
        var (_, _, klStacked, _) = CompressionTests.Compress(recipe, Samples, Chunks);
        // GPTQ already compensates rounding through H, so AWQ's scales need not help it (measured at 32 × 256 calibration:
        // 1.14e-2 stacked vs 9.87e-3 GPTQ alone; at 128 × 256 the stack was the better one). What stacking guarantees is that
        // GPTQ quantizes weights whose folds keep the function: a scale applied to the weights but not folded into the norm
        // (or folded twice) multiplies the KL many times over, so the bound is a factor of 1.5.
        Assert.True(klStacked < klGptq * 1.5, $"KL awq+gptq {klStacked:E3} vs gptq {klGptq:E3}");
    }

    [Fact]
    public void Recipes_built_in_code_serialize_combine_and_validate_like_files()
    {
        var smooth = Recipe.From("smooth", [new ModifierSpec("smoothquant").Ignoring("lm_head").With("alpha", 0.75)]);
        var gptq = Recipe.From("w4", [new ModifierSpec("gptq", "re:.*self_attn.*", "down_proj").With("bits", 4).With("group_size", 64).With("act_order", true)]);
        var both = smooth.Then(gptq);

        Assert.Equal("smooth+w4", both.Name);
        Assert.Equal(["smoothquant", "gptq"], both.Modifiers.Select(m => m.Spec.Method));
        // What a built recipe saves is a recipe file that parses back to the same modifiers.
        var reparsed = Recipe.Parse(both.Text, "again", "again.yaml");
        Assert.Equal(both.Modifiers.Select(m => m.Spec.Method), reparsed.Modifiers.Select(m => m.Spec.Method));
        Assert.Equal(["re:.*self_attn.*", "down_proj"], reparsed.Modifiers[1].Spec.Targets);
        Assert.Equal("0.75", reparsed.Modifiers[0].Spec.Parameters["alpha"]);
        Assert.Equal("true", reparsed.Modifiers[1].Spec.Parameters["act_order"]);
        Assert.True(reparsed.Modifiers[1].Targets.Matches(3, LinearRole.K));
        Assert.False(reparsed.Modifiers[1].Targets.Matches(3, LinearRole.Up));

        var bad = Assert.Throws<ShrinkException>(() => Recipe.From("bad", [new ModifierSpec("gptq").With("bits", 5)]));
        Assert.Contains("recipe 'bad'", bad.Message);
        Assert.Contains("bits: 5 is not one of 2, 3, 4, 8", bad.Message);
        var w8a8 = Assert.Throws<ShrinkException>(() => Recipe.From("w", [new ModifierSpec("gptq").With("activations", "int8")]));
        Assert.Contains("activations: int8 needs bits: 8, granularity: channel, symmetric: true", w8a8.Message);
    }

    /// <summary>A modifier that only tries GPTQ on down_proj, keeps what it saw, and commits nothing.</summary>
    private sealed class Probe(ICompressionMethod candidate) : ICompressionMethod
    {
        public string Name => "probe";
        public StatisticsNeeds Needs => candidate.Needs;
        public List<(CompressedLayer Layer, LayerReport Report, bool DownUnchanged)> Trials { get; } = new();

        public void CompressBlock(BlockCompression block)
        {
            var before = block.Block!.Down;
            var norm = (float[])block.Block.FfnNorm.Clone();
            var (layers, reports) = block.Try(candidate, [LinearRole.Down, LinearRole.Up]);
            bool unchanged = ReferenceEquals(before, block.Block.Down) && norm.SequenceEqual(block.Block.FfnNorm) && !block.IsCompressed(LinearRole.Down);
            Trials.Add((layers.Single(l => l.Role == LinearRole.Down), reports.Single(r => r.Module.EndsWith("down_proj")), unchanged));
        }
    }

    [Fact]
    public void A_tried_candidate_changes_nothing_and_equals_what_committing_it_gives()
    {
        using var dir = new TempDir();
        var config = SyntheticModel.Config();
        using var model = SyntheticModel.Build(dir.File("model.bin"), config, seed: 3);
        var random = new Random(5);
        var calibration = new CalibrationSet(Enumerable.Range(0, 4).Select(_ => Enumerable.Range(0, 32).Select(_ => random.Next(config.VocabSize)).ToArray()).ToArray());
        var scheme = QuantScheme.Grouped(3, 32, symmetric: true);

        // AWQ rescales up_proj's rows and gate/up's inputs: the trial must leave the block's norms and layers alone.
        var probe = new Probe(new AwqMethod(scheme, new AwqOptions(4, 0.5, 64)));
        using (var transformer = new Transformer(model, threads: 1))
        {
            var recipe = new Recipe("probe", "", [new Modifier(probe, TargetSelector.AllLinears("probe"), new ModifierSpec("probe"))]);
            new SequentialPipeline(model, transformer, recipe).Run(calibration);
        }
        Assert.Equal(config.NumLayers, probe.Trials.Count);
        Assert.All(probe.Trials, t => Assert.True(t.DownUnchanged));

        // Committing the same method gives the same codes. Only block 0 sees the same inputs in both runs (the probe
        // leaves block 0 uncompressed, so block 1's inputs differ from the committed run's).
        var committed = new List<CompressedLayer>();
        using (var transformer = new Transformer(model, threads: 1))
        {
            var recipe = Recipe.Parse("modifiers:\n  - method: awq\n    targets: [down_proj, up_proj]\n    bits: 3\n    group_size: 32\n    grid: 4\n    clip_tokens: 64\n", "awq", "awq.yaml");
            new SequentialPipeline(model, transformer, recipe).Run(calibration, new Capture(committed));
        }
        var tried = Assert.IsType<QuantizedLayer>(probe.Trials[0].Layer);
        var real = Assert.IsType<QuantizedLayer>(committed.Single(l => l.Layer == 0 && l.Role == LinearRole.Down));
        Assert.Equal(real.Matrix.Codes, tried.Matrix.Codes);
        Assert.Equal(real.Matrix.Scales, tried.Matrix.Scales);
    }

    private sealed class Capture(List<CompressedLayer> into) : IBlockSink
    {
        public void BlockDone(int layer, TransformerBlock block, IReadOnlyList<CompressedLayer> layers) => into.AddRange(layers);
    }
}
