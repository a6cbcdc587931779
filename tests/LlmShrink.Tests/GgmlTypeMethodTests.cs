using LlmShrink.Compression.Recipes;
using LlmShrink.Evaluation;
using LlmShrink.Export;
using LlmShrink.Formats;
using LlmShrink.Formats.Safetensors;
using LlmShrink.Model;
using LlmShrink.Representations;
using Xunit;
using Xunit.Abstractions;

namespace LlmShrink.Tests;

/// <summary>The <c>ggml</c> method on tinylit-8m: layers quantized to a llama.cpp block type, stored, reloaded and exported to GGUF unchanged.</summary>
public class GgmlTypeMethodTests(ITestOutputHelper output)
{
    private static Recipe GgmlRecipe(string type, string targets = "[Linear]") =>
        CompressionTests.LoadRecipe($"modifiers:\n  - method: ggml\n    targets: {targets}\n    type: {type}\n");

    /// <summary>Every block linear and lm_head, as module paths.</summary>
    private static IEnumerable<string> Modules(ModelConfig c) =>
        Enumerable.Range(0, c.NumLayers).SelectMany(l => LinearRoles.All.Select(r => LinearRoles.ModulePath(l, r))).Append(TensorNames.LmHeadModule);

    private static bool IsQOrK(string module) => module.EndsWith(".q_proj", StringComparison.Ordinal) || module.EndsWith(".k_proj", StringComparison.Ordinal);

    [Fact]
    public void Q4_K_layers_are_the_quantizers_blocks_reload_identically_and_export_to_gguf_byte_for_byte()
    {
        using var dir = new TempDir();
        string folder = dir.File("q4k");
        using (var compressed = TinyLitCompression.Run(GgmlRecipe("Q4_K", "[Linear, lm_head]"), folder))
        {
            // Q4_K has a direct kernel: the layers run on their blocks, 144 bytes per 256 weights.
            Assert.All(compressed.Transformer.Blocks, b => Assert.All(b.Linears, l => Assert.Equal(TensorType.Q4_K, Assert.IsType<GgmlLinear>(l).Type)));
            Assert.IsType<GgmlLinear>(compressed.Transformer.LmHead);
            Assert.Equal(57, compressed.Result.Layers.Count);
            Assert.All(compressed.Result.Layers, l => Assert.True(l.Method == "ggml" && l.Scheme == "ggml Q4_K" && l.BitsPerWeight == 4.5, $"{l.Module}: {l.Scheme}, {l.BitsPerWeight}"));
            TinyLitCompression.AssertReloadsIdentically(compressed.Transformer, folder);
        }

        // Each stored row is exactly what GgmlQuantizers.Quantize makes of the checkpoint's row with the recorded importance.
        using var source = ModelLoader.Load(SharedData.TinyLit);
        using var model = ModelLoader.Load(folder);
        using var importance = SafetensorsFile.LoadSet(Path.Combine(folder, CompressedCheckpointWriter.ImportanceFile));
        foreach (string module in Modules(model.Config))
        {
            Assert.Equal(12f, model.Weights.Get(module + ".ggml_type").ToFloatArray().Single()); // GGML_TYPE_Q4_K
            var blocks = GgmlTypeRepresentation.Instance.StoredBlocks(model.Weights, module);
            Assert.Equal(TensorType.Q4_K, blocks.Type);
            var w = source.Weights.Get(module + ".weight").ToFloatArray();
            var imp = importance.Get(module + CompressedCheckpointWriter.ImportanceSuffix).ToFloatArray();
            int columns = (int)blocks.Columns;
            var expected = new byte[blocks.RowByteLength];
            for (int r = 0; r < blocks.Rows; r++)
            {
                GgmlQuantizers.Quantize(TensorType.Q4_K, w.AsSpan(r * columns, columns), expected, imp);
                Assert.True(blocks.RowBytes(r).SequenceEqual(expected), $"{module} row {r}: stored blocks differ from GgmlQuantizers.Quantize");
            }
        }

        // --type Q8_0 applies to the rest (embeddings); the Q4_K layers keep their own type and bytes, Q/K rows in llama.cpp's order.
        string gguf = dir.File("out.gguf");
        var mapped = GgufExporter.Export(model, TensorType.Q8_0, gguf);
        Assert.NotNull(mapped);
        Assert.All(mapped, l => Assert.True(l.Exact && l.Type == TensorType.Q4_K && l.Counts.RefitBlocks == 0 && l.From == "ggml Q4_K", l.Module));
        Assert.Equal("ggml Q4_K → Q4_K: 57 exact", MappedLayer.Summary(mapped));
        using var exported = GgufModelLoader.Load(gguf);
        Assert.Equal(TensorType.Q8_0, exported.Weights.Get(TensorNames.Embedding).Type);
        var permute = RopeRowOrder.SourceRow(RopeStyle.RotateHalf, RopeStyle.Interleaved, model.Config.HeadDim)!;
        foreach (string module in Modules(model.Config))
        {
            var blocks = GgmlTypeRepresentation.Instance.StoredBlocks(model.Weights, module);
            var written = exported.Weights.Get(module + ".weight");
            Assert.Equal(TensorType.Q4_K, written.Type);
            Assert.Equal(blocks.Shape, written.Shape);
            for (long r = 0; r < blocks.Rows; r++)
                Assert.True(written.RowBytes(r).SequenceEqual(blocks.RowBytes(IsQOrK(module) ? permute(r) : r)), $"{module} row {r}: GGUF bytes differ");
        }

        // Same layers; only the Q8_0 embeddings and RoPE's summation order differ, so the predictions are the folder's up
        // to the prompt's int8 activations: Q4_K prompts round each 256 activations to int8 (GgmlKQuantPromptGemm.cs),
        // and the embeddings' difference moves some of those roundings, so each side carries its own rounding noise. On
        // float tiles this KL was 2.6e-6; on int8 activations 1.05e-4, twice the int8 prompt's cost against float measured
        // on a tinylit GPTQ folder (KL +5.5e-5, docs/BENCHMARKS.md). 3e-4 leaves room for that, not for a wrong layer.
        var tokens = CompressedTinyLit.EvalTokens(model, 48);
        var reference = ExportGgufTests.Logits(model, tokens);
        var logits = ExportGgufTests.Logits(exported, tokens);
        int vocab = model.Config.VocabSize;
        double kl = Enumerable.Range(0, tokens.Length).Average(t => KlDivergence.Compute(reference.AsSpan(t * vocab, vocab), logits.AsSpan(t * vocab, vocab)));
        output.WriteLine($"KL(folder ‖ GGUF) = {kl:E2}");
        Assert.True(kl < 3e-4, $"KL(folder ‖ GGUF) {kl:E2}");

        // The dense export writes the weights the blocks decode to.
        string dense = dir.File("dense");
        SafetensorsExporter.Export(model, TensorType.F32, dense);
        using var decoded = ModelLoader.Load(dense);
        foreach (string module in Modules(model.Config))
            Assert.Equal(GgmlTypeRepresentation.Instance.StoredBlocks(model.Weights, module).ToFloatArray(), decoded.Weights.Get(module + ".weight").ToFloatArray());
    }

    /// <summary>
    /// <c>rounding: gptq</c> in a recipe (Q3_K on attention and lm_head, Q5_K on the MLP): the layers are stored as the
    /// blocks GPTQ wrote, reload identically, lose less than the importance-weighted encoder's nearest rounding of the same
    /// types, and the GGUF export writes exactly the stored blocks.
    /// </summary>
    [Fact]
    public void Gptq_rounding_layers_beat_nearest_rounding_and_export_to_gguf_byte_for_byte()
    {
        const string recipe = """
            modifiers:
              - method: ggml
                targets: [re:.*self_attn.*, lm_head]
                type: Q3_K
                rounding: ROUNDING
              - method: ggml
                targets: [gate_proj, up_proj, down_proj]
                type: Q5_K
                rounding: ROUNDING
            """;
        static TensorType TypeOf(string module) => module.Contains(".mlp.", StringComparison.Ordinal) ? TensorType.Q5_K : TensorType.Q3_K;
        using var dir = new TempDir();
        string folder = dir.File("gptq");
        IReadOnlyList<LlmShrink.Compression.LayerReport> gptq, nearest;
        using (var compressed = TinyLitCompression.Run(CompressionTests.LoadRecipe(recipe.Replace("ROUNDING", "gptq")), folder))
        {
            gptq = compressed.Result.Layers;
            Assert.Equal(57, gptq.Count);
            Assert.All(gptq, l => Assert.Equal($"ggml {TypeOf(l.Module)}", l.Scheme));
            TinyLitCompression.AssertReloadsIdentically(compressed.Transformer, folder);
        }
        using (var compressed = TinyLitCompression.Run(CompressionTests.LoadRecipe(recipe.Replace("ROUNDING", "nearest")), null))
            nearest = compressed.Result.Layers;
        // Block 0's layers see the same calibration inputs in both runs: each loses less under GPTQ; later ones on average.
        foreach (var (g, n) in gptq.Zip(nearest))
        {
            Assert.Equal(n.Module, g.Module);
            Assert.Equal(n.StoredBits, g.StoredBits);
            output.WriteLine($"{g.Module}: relative output error nearest {n.RelativeOutputError:E3}, gptq {g.RelativeOutputError:E3}");
            if (g.Module.StartsWith("model.layers.0.", StringComparison.Ordinal)) Assert.True(g.RelativeOutputError < n.RelativeOutputError, g.Module);
        }
        double meanGptq = gptq.Average(l => l.RelativeOutputError), meanNearest = nearest.Average(l => l.RelativeOutputError);
        output.WriteLine($"mean relative output error: nearest {meanNearest:E3}, gptq {meanGptq:E3}");
        Assert.True(meanGptq < 0.8 * meanNearest, $"mean relative output error gptq {meanGptq:E3} vs nearest {meanNearest:E3}");

        using var model = ModelLoader.Load(folder);
        string gguf = dir.File("out.gguf");
        var mapped = GgufExporter.Export(model, TensorType.Q8_0, gguf);
        Assert.NotNull(mapped);
        Assert.All(mapped, l => Assert.True(l.Exact && l.Type == TypeOf(l.Module) && l.Counts.RefitBlocks == 0, l.Module));
        using var exported = GgufModelLoader.Load(gguf);
        var permute = RopeRowOrder.SourceRow(RopeStyle.RotateHalf, RopeStyle.Interleaved, model.Config.HeadDim)!;
        foreach (string module in Modules(model.Config))
        {
            var blocks = GgmlTypeRepresentation.Instance.StoredBlocks(model.Weights, module);
            Assert.Equal(TypeOf(module), blocks.Type);
            var written = exported.Weights.Get(module + ".weight");
            Assert.Equal(blocks.Type, written.Type);
            Assert.Equal(blocks.Shape, written.Shape);
            for (long r = 0; r < blocks.Rows; r++)
                Assert.True(written.RowBytes(r).SequenceEqual(blocks.RowBytes(IsQOrK(module) ? permute(r) : r)), $"{module} row {r}: GGUF bytes differ");
        }
    }

    [Fact]
    public void An_unknown_rounding_is_a_one_line_recipe_error()
    {
        var e = Assert.Throws<ShrinkException>(() => CompressionTests.LoadRecipe("modifiers:\n  - method: ggml\n    targets: [Linear]\n    type: Q4_K\n    rounding: rtn\n"));
        Assert.Equal("test.yaml: line 2, column 5: modifier 'ggml': rounding: 'rtn' is not one of nearest, gptq", e.Message);
    }

    /// <summary>
    /// Error against the float model follows the bits: Q8_0 (8.5 bits per weight) &lt; Q4_K (4.5) &lt; Q4_0 (4.5, one scale per 32
    /// weights and no offset), each importance-weighted; 4-bit K-quants stay close to float on this model.
    /// </summary>
    [Fact]
    public void Kl_to_float_orders_q8_0_below_q4_k_below_q4_0()
    {
        const int samples = 16, chunks = 20;
        double Kl(string type) => CompressionTests.Compress($"modifiers:\n  - method: ggml\n    targets: [Linear]\n    type: {type}\n", samples, chunks).Kl;
        double q8 = Kl("Q8_0"), q4k = Kl("Q4_K"), q40 = Kl("Q4_0");
        output.WriteLine($"mean KL to float: Q8_0 {q8:E3}, Q4_K {q4k:E3}, Q4_0 {q40:E3}");
        Assert.True(q8 < q4k && q4k < q40, $"KL Q8_0 {q8:E3}, Q4_K {q4k:E3}, Q4_0 {q40:E3}");
        Assert.True(q4k < 5e-3, $"KL Q4_K {q4k:E3}");
    }

    [Theory]
    [InlineData("type: Q9_9", "type: 'Q9_9' is not a ggml block type")]
    [InlineData("type: F16", "type: 'F16' is not a ggml block type")]
    [InlineData("type: 12", "type: '12' is not a ggml block type")] // GGML_TYPE_Q4_K's id, but types are named
    [InlineData("bits: 4", "type: required")]
    [InlineData("rounding: gptq\n    type: IQ4_XS", "type: 'IQ4_XS' is not a ggml block type")] // GPTQ's rounding has a grid only for the types ggml encodes
    public void A_bad_type_is_a_one_line_recipe_error(string parameter, string message)
    {
        var e = Assert.Throws<ShrinkException>(() => CompressionTests.LoadRecipe($"modifiers:\n  - method: ggml\n    targets: [Linear]\n    {parameter}\n"));
        Assert.Contains(message, e.Message);
        Assert.Contains("Q4_K", e.Message); // the types that are accepted are listed
        Assert.DoesNotContain('\n', e.Message);
    }

    [Theory]
    [InlineData("nearest")]
    [InlineData("gptq")]
    public void A_row_length_that_is_not_a_whole_number_of_blocks_is_a_one_line_error_naming_the_modifier(string rounding)
    {
        // A quarter of the MLP channels removed leaves down_proj 576 inputs: 18 Q4_0 blocks, 2.25 Q4_K super-blocks.
        var recipe = CompressionTests.LoadRecipe($"""
            modifiers:
              - method: prune-ffn
                targets: [down_proj]
                fraction: 0.25
              - method: ggml
                targets: [down_proj]
                type: Q4_K
                rounding: {rounding}
            """);
        var e = Assert.Throws<ShrinkException>(() => TinyLitCompression.Run(recipe, null).Dispose());
        Assert.Equal("test.yaml: line 5, column 5: modifier 'ggml': model.layers.0.mlp.down_proj has 576 inputs, not a multiple of the Q4_K block size 256", e.Message);
    }

    [Fact]
    public void Pruned_weights_stay_exactly_zero_in_q4_0_and_q4_k_refuses_the_stacking()
    {
        const string pruned = """
            modifiers:
              - method: wanda
                targets: [Linear]
                pattern: "2:4"
              - method: ggml
                targets: [Linear]
                type: TYPE
            """;
        using var dir = new TempDir();
        string folder = dir.File("q40");
        using (var compressed = TinyLitCompression.Run(CompressionTests.LoadRecipe(pruned.Replace("TYPE", "Q4_0")), folder))
        {
            Assert.All(compressed.Result.Layers.Where(l => l.Method == "ggml"), l => Assert.Equal("ggml Q4_0, 2:4", l.Scheme));
            TinyLitCompression.AssertReloadsIdentically(compressed.Transformer, folder);
        }
        // Q4_0 blocks are symmetric (w = d·(q − 8)): at least 2 of every 4 consecutive weights decode to exactly 0.
        using (var model = ModelLoader.Load(folder))
            foreach (string module in Modules(model.Config).SkipLast(1))
            {
                var w = GgmlTypeRepresentation.Instance.StoredBlocks(model.Weights, module).ToFloatArray();
                for (int q = 0; q < w.Length; q += 4)
                    Assert.True(w.AsSpan(q, 4).Count(0f) >= 2, $"{module}: weights {q}…{q + 3} are not 2:4 sparse");
            }

        // Q4_K blocks carry an offset (w = d·sc·q − dmin·m): 0 is not a level, so a pruned weight would come back nonzero.
        var e = Assert.Throws<ShrinkException>(() => TinyLitCompression.Run(CompressionTests.LoadRecipe(pruned.Replace("TYPE", "Q4_K")), null).Dispose());
        Assert.StartsWith("recipe conflict: ggml Q4_K cannot keep model.layers.0.self_attn.q_proj's pruned weights at 0", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }
}
