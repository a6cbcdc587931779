using System.Globalization;
using System.Text.Json.Nodes;
using LlmShrink.Compression;
using LlmShrink.Compression.Recipes;
using LlmShrink.Evaluation;
using LlmShrink.Export;
using LlmShrink.Formats;
using LlmShrink.Model;
using LlmShrink.Model.Synthesis;
using Xunit;
using LlmShrink.Representations;

namespace LlmShrink.Tests;

/// <summary>Recipes that target lm_head: the head stage of the pipeline, the written folder (untied when tied), loading, exports.</summary>
[Collection(CompressedTinyLit.Collection)]
public class LmHeadCompressionTests
{
    private const string RtnAll = """
        modifiers:
          - method: rtn
            targets: [Linear, lm_head]
            bits: 4
            group_size: 128
        """;

    private static readonly int[] Tokens = [1, 450, 1302, 261, 609, 2989, 278, 2, 17, 4000];

    /// <summary>A tinylit-shaped random model whose lm_head is tied to the embeddings (as Llama-3.2-1B's is).</summary>
    private static string TiedModel(TempDir dir)
    {
        string folder = dir.File("tied");
        RandomModel.Write(folder, RandomModel.Shape("tinylit") with { TiedEmbeddings = true }, TensorType.F32, seed: 7);
        return folder;
    }

    /// <summary>Compresses <paramref name="source"/> into <paramref name="output"/>; returns the in-memory model's logits and final norm, and the report lines.</summary>
    private static (float[] Logits, float[] FinalNorm, IReadOnlyList<LayerReport> Reports) Compress(string source, string recipe, string output, CalibrationSet? calibration = null)
    {
        using var model = ModelLoader.Load(source);
        using var transformer = new Transformer(model);
        using var writer = new CompressedCheckpointWriter(model, output);
        calibration ??= CalibrationSet.Random(model.Config.VocabSize, model.Config.BosTokenId, 8, 64, seed: 3);
        var parsed = Recipe.Parse(recipe, "test", "test.yaml");
        var result = new SequentialPipeline(model, transformer, parsed).Run(calibration, writer);
        writer.Finish(parsed.Text, "report");
        return (Logits(transformer), transformer.FinalNorm, result.Layers);
    }

    private static float[] Logits(Transformer transformer)
    {
        var logits = new float[Tokens.Length * transformer.Config.VocabSize];
        transformer.Forward(Tokens, transformer.NewCache(Tokens.Length), logits);
        return logits;
    }

    private static JsonObject Json(string path) => (JsonObject)JsonNode.Parse(File.ReadAllText(path))!;

    [Fact]
    public void A_tied_model_with_a_quantized_lm_head_is_written_untied_and_reloads_to_identical_logits()
    {
        using var dir = new TempDir();
        string source = TiedModel(dir), output = dir.File("compressed");
        var (inMemory, _, reports) = Compress(source, RtnAll, output);
        Assert.Equal(8 * 7 + 1, reports.Count);
        var head = reports.Single(r => r.Module == "lm_head");
        Assert.Equal("rtn", head.Method);
        Assert.InRange(head.RelativeOutputError, 1e-4, 0.05);

        var config = Json(Path.Combine(output, "config.json"));
        Assert.False(config["tie_word_embeddings"]!.GetValue<bool>());
        Assert.True(config["quantization_config"]!["lm_head"]!.GetValue<bool>());

        using var loaded = ModelLoader.Load(output);
        using var original = ModelLoader.Load(source);
        Assert.False(loaded.Config.TiedEmbeddings);
        Assert.NotNull(loaded.Weights.Find("lm_head.qweight"));
        Assert.Null(loaded.Weights.Find(TensorNames.LmHead));
        // The embeddings stay exactly as the source stored them.
        Assert.Equal(original.Weights.Get(TensorNames.Embedding).ToFloatArray(), loaded.Weights.Get(TensorNames.Embedding).ToFloatArray());

        using var reloaded = new Transformer(loaded);
        Assert.IsType<GptqLinear>(reloaded.LmHead);
        Assert.Equal(inMemory, Logits(reloaded));

        // inspect: lm_head now has parameters of its own (out × in, not the embedding's); a generated token streams the packed bytes.
        var before = ModelStatistics.Of(original);
        var after = ModelStatistics.Of(loaded);
        var c = loaded.Config;
        Assert.Equal(0, before.Groups.Single(g => g.Name == "lm_head").Parameters);
        Assert.Equal((long)c.VocabSize * c.HiddenSize, after.Groups.Single(g => g.Name == "lm_head").Parameters);
        Assert.Equal(before.Parameters + (long)c.VocabSize * c.HiddenSize, after.Parameters);
        Assert.Equal(before.MatmulParameters, after.MatmulParameters);
        Assert.InRange(after.MatmulBytes, before.MatmulBytes / 8, before.MatmulBytes / 6);
        Assert.Equal(loaded.Weights.All.Where(t => t.Name.StartsWith("lm_head.", StringComparison.Ordinal)).Sum(t => t.ByteLength),
            after.Groups.Single(g => g.Name == "lm_head").Bytes);
    }

    [Theory]
    // AWQ's search may keep s = 1 (α = 0) for lm_head (it does on tinylit-8m); SmoothQuant's α = 0.5 always rescales.
    [InlineData("awq", "bits: 4\n    group_size: 64\n    symmetric: false", typeof(GptqLinear), false)]
    [InlineData("smoothquant", "alpha: 0.5", typeof(W8A8Linear), true)]
    public void Rescaling_methods_fold_into_the_final_norm_and_the_folder_runs_like_the_in_memory_model(string method, string parameters, Type layer, bool alwaysRescales)
    {
        using var dir = new TempDir();
        string output = dir.File("compressed");
        using var model = ModelLoader.Load(SharedData.TinyLit);
        var calibration = CalibrationSet.FromFile(SharedData.Corpus("tinylit_calib.txt"), model.RequireTokenizer(), 8, 64, seed: 1);
        var (inMemory, finalNorm, reports) = Compress(SharedData.TinyLit, $"modifiers:\n  - method: {method}\n    targets: [lm_head]\n    {parameters}\n", output, calibration);
        Assert.Equal("lm_head", Assert.Single(reports).Module);

        using var loaded = ModelLoader.Load(output);
        using var reloaded = new Transformer(loaded);
        Assert.IsType(layer, reloaded.LmHead);
        Assert.Equal(inMemory, Logits(reloaded));
        // The scales went into model.norm.weight; the blocks are untouched.
        Assert.Equal(finalNorm, loaded.Weights.Get(TensorNames.FinalNorm).ToFloatArray());
        if (alwaysRescales) Assert.NotEqual(model.Weights.Get(TensorNames.FinalNorm).ToFloatArray(), finalNorm);
        Assert.NotNull(loaded.Weights.Find("model.layers.0.self_attn.q_proj.weight"));
        Assert.True(File.Exists(Path.Combine(output, CompressedCheckpointWriter.ImportanceFile)));
    }

    /// <summary>The report's relative output error of lm_head (calibration inputs through the final norm).</summary>
    private static double LmHeadError(string method, TempDir dir)
    {
        string output = dir.File(method);
        CompressionJob.Run(new CompressionRequest(SharedData.TinyLit, WriteRecipe(dir, method, $"modifiers:\n  - method: {method}\n    targets: [lm_head]\n    bits: 3\n    group_size: 128\n"),
            SharedData.Corpus("tinylit_calib.txt"), Samples: 8, SequenceLength: 64, Seed: 1, output));
        string line = File.ReadAllLines(Path.Combine(output, "report.md")).Single(l => l.StartsWith("| lm_head |", StringComparison.Ordinal));
        var cells = line.Split('|', StringSplitOptions.TrimEntries);
        Assert.Equal(method, cells[2]);
        return double.Parse(cells[4], CultureInfo.InvariantCulture);
    }

    private static string WriteRecipe(TempDir dir, string name, string yaml)
    {
        string path = dir.File(name + ".yaml");
        File.WriteAllText(path, yaml);
        return path;
    }

    [Fact]
    public void Gptq_on_lm_head_has_a_lower_output_error_than_rtn()
    {
        using var dir = new TempDir();
        double rtn = LmHeadError("rtn", dir), gptq = LmHeadError("gptq", dir);
        // Measured: 1.08E-003 vs 3.77E-003 (3-bit g128).
        Assert.True(gptq < 0.5 * rtn, $"lm_head relative output error: GPTQ {gptq:E3}, RTN {rtn:E3}");
    }

    [Fact]
    public void A_mixed_recipe_declares_lm_head_in_the_gptq_dynamic_rules_and_the_export_keeps_it_out_of_the_block_list()
    {
        using var dir = new TempDir();
        string folder = dir.File("compressed");
        using var model = ModelLoader.Load(SharedData.TinyLit);
        var calibration = CalibrationSet.FromFile(SharedData.Corpus("tinylit_calib.txt"), model.RequireTokenizer(), 4, 64, seed: 1);
        Compress(SharedData.TinyLit, """
            modifiers:
              - method: rtn
                targets: [q_proj, k_proj]
                bits: 4
                group_size: 64
              - method: rtn
                targets: [lm_head]
                bits: 8
                granularity: channel
            """, folder, calibration);
        var written = Json(Path.Combine(folder, "config.json"))["quantization_config"]!;
        Assert.True(written["lm_head"]!.GetValue<bool>());
        Assert.Equal(8, written["dynamic"]!["+:lm_head"]!["bits"]!.GetValue<int>());
        Assert.Equal(4, written["bits"]!.GetValue<int>());

        string gptq = dir.File("gptq");
        using (var compressed = ModelLoader.Load(folder)) GptqSafetensorsExporter.Export(compressed, gptq);
        var exported = Json(Path.Combine(gptq, "config.json"))["quantization_config"]!;
        Assert.True(exported["lm_head"]!.GetValue<bool>());
        Assert.Equal(-1, exported["dynamic"]!["+:lm_head"]!["group_size"]!.GetValue<int>());
        Assert.Equal("[[\"self_attn.k_proj\",\"self_attn.q_proj\"]]", exported["modules_in_block_to_quantize"]!.ToJsonString());
    }

    [Theory]
    [InlineData("[embed_tokens]")]
    [InlineData("[Linear, Embedding]")]
    [InlineData("['re:.*embed.*']")]
    public void Targeting_the_embeddings_is_a_recipe_error_that_points_to_the_gguf_export(string targets)
    {
        var e = Assert.Throws<ShrinkException>(() => Recipe.Parse($"modifiers:\n  - method: rtn\n    targets: {targets}\n", "bad", "bad.yaml"));
        Assert.StartsWith("bad.yaml: ", e.Message);
        Assert.Contains("llmshrink export --format gguf --type", e.Message);
    }

    [Fact]
    public void Linear_means_the_block_linears_and_lm_head_is_targeted_by_name_or_regex()
    {
        bool Head(string targets, string ignore = "[]") =>
            Recipe.Parse($"modifiers:\n  - method: rtn\n    targets: {targets}\n    ignore: {ignore}\n", "t", "t.yaml").Modifiers[0].Targets.Matches(8, LinearRole.LmHead);
        Assert.False(Head("[Linear]"));
        Assert.True(Head("[Linear, lm_head]"));
        Assert.True(Head("['re:^lm_']"));
        Assert.True(Head("['re:.*']")); // a catch-all regex selects every linear, lm_head included (not an embeddings error)
        Assert.False(Head("['re:.*proj']"));
        Assert.False(Head("[lm_head]", "[lm_head]"));
        var twice = Recipe.Parse("modifiers:\n  - method: rtn\n    targets: [lm_head]\n  - method: gptq\n    targets: ['re:lm_head']\n", "twice", "twice.yaml");
        using var model = ModelLoader.Load(SharedData.TinyLit);
        using var transformer = new Transformer(model);
        var calibration = CalibrationSet.Random(model.Config.VocabSize, 1, 1, 16, seed: 0);
        var e = Assert.Throws<ShrinkException>(() => new SequentialPipeline(model, transformer, twice).Run(calibration));
        Assert.Contains("gptq targets lm_head, which rtn already quantized", e.Message);
    }

    [Fact]
    public void Exports_of_a_folder_with_a_packed_lm_head_keep_it()
    {
        using var dir = new TempDir();
        string source = TiedModel(dir), folder = dir.File("compressed");
        Compress(source, RtnAll, folder);
        using var compressed = ModelLoader.Load(folder);
        var reference = ExportGgufTests.Logits(compressed, Tokens);

        // GGUF: lm_head → output.weight, its RTN 4-bit symmetric integers written as Q4_0 blocks exactly.
        string gguf = dir.File("model.gguf");
        var mapped = GgufExporter.Export(compressed, TensorType.Q4_0, gguf, denseType: TensorType.F32)!;
        var head = mapped.Single(l => l.Module == "lm_head");
        Assert.True(head.Exact && head.Type == TensorType.Q4_0, $"{head.From} → {head.Type}");
        using (var exported = GgufModelLoader.Load(gguf))
        {
            Assert.False(exported.Config.TiedEmbeddings);
            Assert.Equal(ScaledIntegerMatrix.Read(compressed.Weights, "lm_head").Dequantize(), exported.Weights.Get(TensorNames.LmHead).ToFloatArray());
            // The kernels quantize activations to int8 for Q4_0 × Q8_0 products, so logits agree closely, not exactly.
            var logits = ExportGgufTests.Logits(exported, Tokens);
            float worst = reference.Zip(logits, (a, b) => Math.Abs(a - b)).Max();
            Assert.True(worst < 0.05f * reference.Max(Math.Abs), $"logits differ by {worst}");
        }

        // GPTQ safetensors: lm_head's packed tensors copied, declared with "lm_head": true; logits identical.
        string gptq = dir.File("gptq");
        GptqSafetensorsExporter.Export(compressed, gptq);
        Assert.True(Json(Path.Combine(gptq, "config.json"))["quantization_config"]!["lm_head"]!.GetValue<bool>());
        using (var exported = ModelLoader.Load(gptq))
            Assert.Equal(reference, ExportGgufTests.Logits(exported, Tokens));

        // Dense safetensors: every packed module (lm_head included) written as its dequantized weight, exactly. The logits
        // then agree up to the int8 rounding of activations the packed 4-bit kernels apply (decode and prompt alike).
        string dense = dir.File("dense");
        SafetensorsExporter.Export(compressed, TensorType.F32, dense);
        using (var exported = ModelLoader.Load(dense))
        {
            Assert.Null(exported.Weights.Find("lm_head.qweight"));
            Assert.Null(Json(Path.Combine(dense, "config.json"))["quantization_config"]);
            foreach (string module in compressed.Weights.Names.Where(n => n.EndsWith(".qweight")).Select(n => n[..^".qweight".Length]))
                Assert.Equal(ScaledIntegerMatrix.Read(compressed.Weights, module).Dequantize(), exported.Weights.Get(module + ".weight").ToFloatArray());
            var logits = ExportGgufTests.Logits(exported, Tokens);
            float worst = reference.Zip(logits, (a, b) => Math.Abs(a - b)).Max();
            Assert.True(worst < 0.05f * reference.Max(Math.Abs), $"logits differ by {worst}");
        }
    }
}
