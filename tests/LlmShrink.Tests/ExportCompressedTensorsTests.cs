using System.Text.Json.Nodes;
using LlmShrink.Cli.Commands;
using LlmShrink.Compression;
using LlmShrink.Export;
using LlmShrink.Formats;
using LlmShrink.Model;
using LlmShrink.Model.Synthesis;
using LlmShrink.Representations;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>
/// <c>export --format compressed-tensors</c> of small random models compressed with random calibration: an independent
/// decoder (<see cref="CompressedTensorsDecoder"/>) reads every linear module back from the exported files and config,
/// and it must equal the compressed folder's own dequantized weights bit for bit (F16 rounding only for modules re-written
/// as float: the low-rank product in an F16 model).
/// </summary>
public class ExportCompressedTensorsTests(ExportCompressedTensorsTests.Folders folders) : IClassFixture<ExportCompressedTensorsTests.Folders>
{
    /// <summary>
    /// A two-block tinylit-shaped random model in F16, compressed once per recipe for the class (2 random samples × 32
    /// tokens: seconds), in a temporary folder deleted after the last test.
    /// </summary>
    public sealed class Folders : IDisposable
    {
        private readonly string _root = Directory.CreateTempSubdirectory("llmshrink-ct-").FullName;

        /// <summary>The folder compressed with <paramref name="recipe"/> (a preset name or YAML text).</summary>
        public string Get(string name, string recipe)
        {
            string folder = Path.Combine(_root, name), model = Path.Combine(_root, "random");
            if (Directory.Exists(folder)) return folder;
            if (!Directory.Exists(model)) RandomModel.Write(model, RandomModel.Shape("tinylit") with { NumLayers = 2 }, TensorType.F16, seed: 5);
            if (recipe.Contains('\n'))
            {
                File.WriteAllText(Path.Combine(_root, name + ".yaml"), recipe);
                recipe = Path.Combine(_root, name + ".yaml");
            }
            CompressionJob.Run(new CompressionRequest(model, recipe, CalibrationSet.RandomSource, 2, 32, 0, folder));
            return folder;
        }

        public void Dispose()
        {
            try { Directory.Delete(_root, recursive: true); } catch (IOException) { }
        }
    }

    private string Compressed(string name, string recipe) => folders.Get(name, recipe);

    private const string AsymmetricRtn = """
        modifiers:
          - method: rtn
            targets: [Linear]
            ignore: [lm_head]
            bits: 4
            group_size: 128
            symmetric: false
        """;

    /// <summary>
    /// What <c>auto</c> writes, and more: per-layer bits, groups, symmetry, act-order, W8A8, a 2:4-sparse 4-bit layer, a
    /// low-rank and a ggml-block layer, float layers, a 4-bit lm_head.
    /// </summary>
    private const string Mixed = """
        modifiers:
          - method: gptq
            targets: ['re:model\.layers\.0\.self_attn\.[qkv]_proj']
            bits: 4
            group_size: 64
            act_order: true
          - method: rtn
            targets: ['re:model\.layers\.0\.mlp\.(gate|up)_proj']
            bits: 8
            granularity: channel
          - method: rtn
            targets: ['re:model\.layers\.0\.self_attn\.o_proj']
            bits: 3
            group_size: 32
            symmetric: false
          - method: rtn
            targets: ['re:model\.layers\.1\.self_attn\.[qkv]_proj']
            bits: 4
            group_size: 32
            symmetric: false
          - method: gptq
            targets: ['re:model\.layers\.1\.mlp\.down_proj']
            bits: 8
            granularity: channel
            symmetric: true
            activations: int8
          - method: svd
            targets: ['re:model\.layers\.0\.mlp\.down_proj']
            rank: 16
          - method: sparsegpt
            targets: ['re:model\.layers\.1\.self_attn\.o_proj']
            pattern: "2:4"
          - method: gptq
            targets: ['re:model\.layers\.1\.self_attn\.o_proj']
            bits: 4
            group_size: 128
          - method: ggml
            targets: ['re:model\.layers\.1\.mlp\.gate_proj']
            type: Q8_0
          - method: rtn
            targets: [lm_head]
            bits: 4
            group_size: 128
            symmetric: true
        """;

    /// <summary>Exports <paramref name="folder"/> through the command, returns the export folder and what the command printed.</summary>
    private static (string Output, string Console) Export(string folder, TempDir dir)
    {
        string output = dir.File("ct");
        var console = new StringWriter();
        ExportCommand.Run(folder, "compressed-tensors", null, null, output, null, null, console: console);
        return (output, console.ToString());
    }

    /// <summary>Every linear module of the export decodes to the compressed folder's weights; other tensors are copied byte for byte.</summary>
    private static void AssertDecodesToCompressedWeights(string folder, string output)
    {
        using var compressed = ModelLoader.Load(folder);
        using var decoder = new CompressedTensorsDecoder(output);
        var modules = Enumerable.Range(0, compressed.Config.NumLayers).SelectMany(l => LinearRoles.All.Select(r => LinearRoles.ModulePath(l, r))).Append(TensorNames.LmHeadModule);
        Assert.Equal(TensorType.F16, compressed.Weights.Get(TensorNames.Embedding).Type); // the model's dtype, which float-written modules take
        foreach (string module in modules)
        {
            var stored = LayerRepresentations.Of(compressed.Weights, module, folder).Base(compressed.Weights, module);
            var expected = LayerRepresentations.Dequantize(stored, compressed.Weights, module, folder);
            bool quantized = decoder.Scheme(module) is not null;
            Assert.True(quantized != decoder.Ignored(module), $"{module}: quantized {quantized}, ignored {decoder.Ignored(module)}");
            if (!quantized && !stored.IsDense) // re-written as float: the product rounded to F16
                expected = [.. expected.Select(v => (float)(Half)v)];
            var actual = decoder.Weight(module);
            Assert.Equal(expected.Length, actual.Length);
            int mismatch = Enumerable.Range(0, expected.Length).FirstOrDefault(i => BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]), -1);
            Assert.True(mismatch < 0, $"{module} ({stored.Name}): element {mismatch} is {(mismatch < 0 ? 0 : actual[mismatch])}, compressed {(mismatch < 0 ? 0 : expected[mismatch])}");
        }
        foreach (string name in new[] { TensorNames.Embedding, TensorNames.FinalNorm, TensorNames.Layer(1, TensorNames.AttnNorm) })
            Assert.True(compressed.Weights.Get(name).Bytes().SequenceEqual(decoder.Tensors[name].Bytes()), name);
        Assert.DoesNotContain(decoder.Tensors.Keys, name => name.EndsWith(".qweight") || name.EndsWith(".lowrank_u.weight") || name.Contains(".sparse24_") || name.EndsWith(".ggml_blocks"));
    }

    [Fact]
    public void Symmetric_int4_g128_gptq_is_pack_quantized_and_decodes_exactly()
    {
        using var dir = new TempDir();
        string folder = Compressed("w4g128-gptq", "w4g128-gptq");
        var (output, console) = Export(folder, dir);
        AssertDecodesToCompressedWeights(folder, output);
        using var decoder = new CompressedTensorsDecoder(output);
        var q = decoder.Quantization;
        Assert.Equal("pack-quantized", q["format"]!.GetValue<string>());
        var group = Assert.Single(q["config_groups"]!.AsObject()).Value!.AsObject();
        Assert.Equal(14, group["targets"]!.AsArray().Count);
        var weights = group["weights"]!.AsObject();
        Assert.Equal((4, "group", 128, true), (weights["num_bits"]!.GetValue<int>(), weights["strategy"]!.GetValue<string>(), weights["group_size"]!.GetValue<int>(), weights["symmetric"]!.GetValue<bool>()));
        Assert.Equal(["lm_head"], q["ignore"]!.AsArray().Select(n => n!.GetValue<string>()));
        // Symmetric: no zero points; 8 codes per int32 along the input; scales [out, in/128] in F16.
        var packed = decoder.Tensors["model.layers.0.mlp.down_proj.weight_packed"];
        Assert.Equal(TensorType.I32, packed.Type);
        Assert.Equal([256, 768 / 8], packed.Shape);
        Assert.Equal(new long[] { 256, 6 }, decoder.Tensors["model.layers.0.mlp.down_proj.weight_scale"].Shape);
        Assert.Equal(TensorType.I64, decoder.Tensors["model.layers.0.mlp.down_proj.weight_shape"].Type);
        Assert.DoesNotContain(decoder.Tensors.Keys, n => n.EndsWith(".weight_zero_point"));
        Assert.Empty(console);
        Assert.True(File.Exists(Path.Combine(output, "recipe.yaml")));
        Assert.DoesNotContain(Directory.GetDirectories(dir.Path), d => d.Contains(".tmp-"));
    }

    [Fact]
    public void Asymmetric_int4_rtn_packs_its_zero_points_along_the_outputs()
    {
        using var dir = new TempDir();
        string folder = Compressed("w4g128-rtn-asym", AsymmetricRtn);
        var (output, _) = Export(folder, dir);
        AssertDecodesToCompressedWeights(folder, output);
        using var decoder = new CompressedTensorsDecoder(output);
        var weights = Assert.Single(decoder.Quantization["config_groups"]!.AsObject()).Value!["weights"]!.AsObject();
        Assert.False(weights["symmetric"]!.GetValue<bool>());
        var zeros = decoder.Tensors["model.layers.1.self_attn.k_proj.weight_zero_point"]; // k_proj [128, 256]: 16 words of 8 outputs, 2 groups
        Assert.Equal(TensorType.I32, zeros.Type);
        Assert.Equal([128 / 8, 2], zeros.Shape);
    }

    [Fact]
    public void W8A8_smoothquant_is_int_quantized_with_dynamic_per_token_activations()
    {
        using var dir = new TempDir();
        string folder = Compressed("w8a8-smoothquant", "w8a8-smoothquant");
        var (output, _) = Export(folder, dir);
        AssertDecodesToCompressedWeights(folder, output);
        using var decoder = new CompressedTensorsDecoder(output);
        Assert.Equal("int-quantized", decoder.Quantization["format"]!.GetValue<string>());
        var group = Assert.Single(decoder.Quantization["config_groups"]!.AsObject()).Value!.AsObject();
        var weights = group["weights"]!.AsObject();
        Assert.Equal((8, "channel", true), (weights["num_bits"]!.GetValue<int>(), weights["strategy"]!.GetValue<string>(), weights["symmetric"]!.GetValue<bool>()));
        Assert.Null(weights["group_size"]);
        var inputs = group["input_activations"]!.AsObject();
        Assert.Equal((8, "token", true, true), (inputs["num_bits"]!.GetValue<int>(), inputs["strategy"]!.GetValue<string>(), inputs["dynamic"]!.GetValue<bool>(), inputs["symmetric"]!.GetValue<bool>()));
        Assert.Equal(TensorType.I8, decoder.Tensors["model.layers.0.self_attn.q_proj.weight"].Type);
        var scale = decoder.Tensors["model.layers.0.mlp.gate_proj.weight_scale"];
        Assert.Equal(TensorType.F32, scale.Type);
        Assert.Equal([768, 1], scale.Shape);
    }

    [Fact]
    public void A_mixed_folder_gets_one_config_group_per_scheme_and_float_layers_in_ignore()
    {
        using var dir = new TempDir();
        string folder = Compressed("mixed", Mixed);
        using (var compressed = ModelLoader.Load(folder))
            Assert.Equal(["gptq", "gptq", "low-rank", "w8a8", "sparse24-int4", "ggml", "dense"],
                new[] { "0.self_attn.q_proj", "0.mlp.gate_proj", "0.mlp.down_proj", "1.mlp.down_proj", "1.self_attn.o_proj", "1.mlp.gate_proj", "1.mlp.up_proj" }
                    .Select(m => LayerRepresentations.Of(compressed.Weights, "model.layers." + m, folder).Name));
        var (output, console) = Export(folder, dir);
        AssertDecodesToCompressedWeights(folder, output);
        using var decoder = new CompressedTensorsDecoder(output);
        var q = decoder.Quantization;
        Assert.Equal("mixed-precision", q["format"]!.GetValue<string>());
        // gptq 4/g64/act-order, 8-bit channel, 3-bit g32 asym, 4-bit g32 asym, W8A8, and 4-bit g128 (the 2:4 layer's and lm_head's).
        Assert.Equal(6, q["config_groups"]!.AsObject().Count);
        Assert.Equal(["model.layers.1.self_attn.o_proj", "lm_head"], decoder.Scheme("lm_head")!["targets"]!.AsArray().Select(n => n!.GetValue<string>()));
        Assert.Equal("group", decoder.Scheme("model.layers.0.self_attn.k_proj")!["weights"]!["actorder"]!.GetValue<string>());
        Assert.Equal(TensorType.I32, decoder.Tensors["model.layers.0.self_attn.k_proj.weight_g_idx"].Type);
        Assert.Equal("int-quantized", decoder.Scheme("model.layers.1.mlp.down_proj")!["format"]!.GetValue<string>());
        Assert.Equal("pack-quantized", decoder.Scheme("lm_head")!["format"]!.GetValue<string>());
        Assert.Equal(new long[] { 256, 24 }, decoder.Tensors["model.layers.0.self_attn.o_proj.weight_packed"].Shape); // 3-bit, dense: 256·3/32 words
        Assert.Equal(new long[] { 24, 8 }, decoder.Tensors["model.layers.0.self_attn.o_proj.weight_zero_point"].Shape); // 256 outputs · 3 bits, 8 groups of 32
        Assert.Equal(["model.layers.0.mlp.down_proj", "model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj"],
            q["ignore"]!.AsArray().Select(n => n!.GetValue<string>()));
        Assert.Equal(TensorType.F16, decoder.Tensors["model.layers.0.mlp.down_proj.weight"].Type); // low-rank product in the model's dtype
        Assert.Contains("2 modules stored as low-rank/ggml", console);
        Assert.Contains("are 3-bit", console);
        Assert.Contains("from 0.17 on", console);
        Assert.Contains("lm_head is quantized", console);
        Assert.DoesNotContain("fused", console);
    }

    [Fact]
    public void Fused_projections_in_different_schemes_are_noted_for_vllm()
    {
        using var dir = new TempDir();
        string folder = Compressed("q-only", "modifiers:\n  - method: rtn\n    targets: [q_proj]\n    bits: 4\n    group_size: 128\n");
        var (output, console) = Export(folder, dir);
        AssertDecodesToCompressedWeights(folder, output);
        Assert.Contains("note: 2 fused projections (model.layers.0.self_attn.qkv, …) mix schemes", console);
    }

    [Fact]
    public void A_compensated_folder_exports_its_quantized_base_and_says_where_the_compensation_goes()
    {
        using var dir = new TempDir();
        string folder = Compressed("eora", "w3g128-gptq-eora32");
        var (output, console) = Export(folder, dir);
        AssertDecodesToCompressedWeights(folder, output); // against each module's base, without B·A
        using var decoder = new CompressedTensorsDecoder(output);
        Assert.DoesNotContain(decoder.Tensors.Keys, name => name.Contains(".lora_"));
        Assert.False(File.Exists(Path.Combine(output, CompensatedRepresentation.FileName)));
        Assert.Contains("without their low-rank compensation (EoRA); write it as an adapter with --format peft-lora", console);
    }

    [Fact]
    public void The_quantization_config_has_what_vllm_and_the_library_read()
    {
        using var dir = new TempDir();
        var (output, _) = Export(Compressed("mixed", Mixed), dir);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "config.json")))!.AsObject();
        var q = config["quantization_config"]!.AsObject();
        Assert.Equal("compressed-tensors", q["quant_method"]!.GetValue<string>());
        Assert.Equal("compressed", q["quantization_status"]!.GetValue<string>());
        Assert.Equal(CompressedTensorsScheme.LibraryVersion, q["version"]!.GetValue<string>());
        Assert.Null(q["kv_cache_scheme"]);
        Assert.Empty(q["sparsity_config"]!.AsObject());
        // QuantizationArgs forbids unknown fields: exactly the library's, for weights and activations alike.
        string[] argumentKeys = ["num_bits", "type", "symmetric", "group_size", "strategy", "block_structure", "dynamic", "actorder", "observer", "observer_kwargs"];
        foreach (var (_, node) in q["config_groups"]!.AsObject())
        {
            var group = node!.AsObject();
            Assert.Equal(["targets", "weights", "input_activations", "output_activations", "format"], group.Select(p => p.Key));
            Assert.Equal(argumentKeys, group["weights"]!.AsObject().Select(p => p.Key));
            Assert.Equal("int", group["weights"]!["type"]!.GetValue<string>());
            if (group["input_activations"] is JsonObject inputs) Assert.Equal(argumentKeys, inputs.Select(p => p.Key));
            var weights = group["weights"]!;
            // strategy group ⇔ a positive group_size; channel ⇔ none (the library's validator).
            Assert.Equal(weights["strategy"]!.GetValue<string>() == "group", weights["group_size"] is not null);
        }
        Assert.False(config["tie_word_embeddings"]!.GetValue<bool>());
    }

    [Fact]
    public void An_interrupted_export_leaves_nothing()
    {
        using var dir = new TempDir();
        string folder = Compressed("w4g128-gptq", "w4g128-gptq");
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.Throws<OperationCanceledException>(() => ExportCommand.Run(folder, "compressed-tensors", null, null, dir.File("ct"), null, null, cancellation: cancelled.Token));
        Assert.Empty(Directory.GetFileSystemEntries(dir.Path));
    }

    [Fact]
    public void A_folder_without_quantized_layers_is_refused_in_one_line()
    {
        using var dir = new TempDir();
        var error = Assert.Throws<ShrinkException>(() => ExportCommand.Run(SharedData.TinyLit, "compressed-tensors", null, null, dir.File("out"), null, null));
        Assert.Contains("has no quantized layers; run `llmshrink compress", error.Message);
        Assert.DoesNotContain('\n', error.Message);
        var typeError = Assert.Throws<ShrinkException>(() => ExportCommand.Run(SharedData.TinyLit, "compressed-tensors", "Q4_0", null, dir.File("out"), null, null));
        Assert.StartsWith("--format compressed-tensors keeps the compressed integers", typeError.Message);
        Assert.Empty(Directory.GetFileSystemEntries(dir.Path));
    }
}
