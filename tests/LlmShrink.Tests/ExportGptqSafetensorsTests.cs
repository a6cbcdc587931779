using System.Text.Json.Nodes;
using LlmShrink.Cli.Commands;
using LlmShrink.Export;
using LlmShrink.Formats.Safetensors;
using LlmShrink.Model;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>The GPTQ v1 safetensors export of compressed tinylit-8m: byte-identical tensors, re-sharded, a quantization_config read off the tensors.</summary>
[Collection(CompressedTinyLit.Collection)]
public class ExportGptqSafetensorsTests
{
    private static JsonObject Json(string path) => (JsonObject)JsonNode.Parse(File.ReadAllText(path))!;

    [Fact]
    public void Export_reshards_at_the_limit_and_loads_back_to_identical_logits()
    {
        using var dir = new TempDir();
        string folder = CompressedTinyLit.Gptq(CompressedTinyLit.SymmetricG32);
        string output = dir.File("gptq");
        const long limit = 1_000_000;
        using var compressed = ModelLoader.Load(folder);
        GptqSafetensorsExporter.Export(compressed, output, limit);

        // Shards: every one within the limit unless it holds a single larger tensor; the index names every tensor once.
        var index = Json(Path.Combine(output, SafetensorsIndex.FileName));
        var weightMap = index["weight_map"]!.AsObject();
        Assert.Equal(compressed.Weights.Names.Order(StringComparer.Ordinal), weightMap.Select(p => p.Key).Order(StringComparer.Ordinal));
        var shards = Directory.GetFiles(output, "model-*.safetensors");
        Assert.True(shards.Length > 3, $"{shards.Length} shards");
        long total = 0;
        foreach (string shard in shards)
        {
            using var file = SafetensorsFile.Open(shard);
            long bytes = file.Tensors.Sum(t => t.ByteLength);
            total += bytes;
            Assert.True(bytes <= limit || file.Tensors.Count == 1, $"{Path.GetFileName(shard)} holds {bytes} bytes in {file.Tensors.Count} tensors");
            Assert.All(file.Tensors, t => Assert.Equal(Path.GetFileName(shard), weightMap[t.Name]!.GetValue<string>()));
        }
        Assert.Equal(total, index["metadata"]!["total_size"]!.GetValue<long>());

        var quantization = Json(Path.Combine(output, "config.json"))["quantization_config"]!.AsObject();
        Assert.Equal("gptq", quantization["quant_method"]!.GetValue<string>());
        Assert.Equal("gptq", quantization["checkpoint_format"]!.GetValue<string>());
        Assert.Equal(4, quantization["bits"]!.GetValue<int>());
        Assert.Equal(32, quantization["group_size"]!.GetValue<int>());
        Assert.True(quantization["sym"]!.GetValue<bool>());
        Assert.False(quantization["desc_act"]!.GetValue<bool>());
        Assert.Null(quantization["dynamic"]); // every decoder linear is quantized alike
        Assert.Equal(quantization.ToJsonString(), Json(Path.Combine(output, "quantize_config.json")).ToJsonString());
        Assert.True(File.Exists(Path.Combine(output, "tokenizer.model")));
        Assert.True(File.Exists(Path.Combine(output, "recipe.yaml")));

        using var exported = HfModelLoader.Load(output);
        foreach (string name in compressed.Weights.Names)
        {
            var (a, b) = (compressed.Weights.Get(name), exported.Weights.Get(name));
            Assert.Equal(a.Type, b.Type);
            Assert.Equal(a.Shape, b.Shape);
            Assert.True(a.Bytes().SequenceEqual(b.Bytes()), name);
        }
        // Biases and dense tensors keep their stored dtype (F32 here), so the function is bit-for-bit the same.
        var tokens = CompressedTinyLit.EvalTokens(compressed, 32);
        Assert.Equal(ExportGgufTests.Logits(compressed, tokens), ExportGgufTests.Logits(exported, tokens));
        Assert.DoesNotContain(Directory.GetDirectories(dir.Path), d => d.Contains(".tmp-"));
    }

    [Fact]
    public void Act_order_and_unquantized_modules_are_declared_for_the_loaders()
    {
        string folder = CompressedTinyLit.Gptq(CompressedTinyLit.ActOrderG128);
        using var compressed = ModelLoader.Load(folder);
        var (quantized, dense) = GptqSafetensorsExporter.Survey(compressed);
        Assert.Empty(dense);
        Assert.All(quantized, q => Assert.Equal((4, 128, true, true), (q.Bits, q.GroupSize, q.Symmetric, q.ActOrder)));
        var config = GptqSafetensorsExporter.QuantizationConfig(quantized, dense, compressed.Config.NumLayers);
        Assert.True(config["desc_act"]!.GetValue<bool>());
        Assert.Equal(128, config["group_size"]!.GetValue<int>());

        // A mixed checkpoint: the most common scheme on top, the others as GPTQModel "dynamic" overrides, dense modules excluded.
        var mixed = quantized.Where(q => !q.Module.EndsWith("down_proj")).Select(q => q with { ActOrder = false }).ToList();
        mixed[0] = mixed[0] with { Bits = 8, Symmetric = false };
        var down = Enumerable.Range(0, compressed.Config.NumLayers).Select(l => $"model.layers.{l}.mlp.down_proj").ToList();
        var mixedConfig = GptqSafetensorsExporter.QuantizationConfig(mixed, down, compressed.Config.NumLayers);
        Assert.False(mixedConfig["desc_act"]!.GetValue<bool>());
        var dynamic = mixedConfig["dynamic"]!.AsObject();
        Assert.Equal(1 + down.Count, dynamic.Count);
        Assert.Equal(8, dynamic[@"+:model\.layers\.0\.self_attn\.q_proj"]!["bits"]!.GetValue<int>());
        Assert.Empty(dynamic[@"-:model\.layers\.3\.mlp\.down_proj"]!.AsObject());
        var inBlock = mixedConfig["modules_in_block_to_quantize"]!.AsArray()[0]!.AsArray().Select(n => n!.GetValue<string>());
        Assert.Equal(["mlp.gate_proj", "mlp.up_proj", "self_attn.k_proj", "self_attn.o_proj", "self_attn.q_proj", "self_attn.v_proj"], inBlock);
    }

    [Fact]
    public void A_dense_model_is_refused_with_the_command_to_run_first()
    {
        using var dir = new TempDir();
        var error = Assert.Throws<ShrinkException>(() => ExportCommand.Run(SharedData.TinyLit, "safetensors-gptq", null, null, dir.File("out"), null, null));
        Assert.Contains("has no GPTQ-quantized layers; run `llmshrink compress", error.Message);
        Assert.Empty(Directory.GetFileSystemEntries(dir.Path));
        var typeError = Assert.Throws<ShrinkException>(() => ExportCommand.Run(SharedData.TinyLit, "safetensors-gptq", "Q4_0", null, dir.File("out"), null, null));
        Assert.StartsWith("--format safetensors-gptq copies the packed tensors", typeError.Message);
    }

    [Fact]
    public void The_export_never_writes_over_its_input_or_into_a_used_folder()
    {
        using var dir = new TempDir();
        string folder = CompressedTinyLit.Gptq(CompressedTinyLit.SymmetricG32);
        var before = Directory.GetFiles(folder).ToDictionary(f => f, f => new FileInfo(f).Length);
        using var compressed = ModelLoader.Load(folder);
        Assert.Throws<ShrinkException>(() => GptqSafetensorsExporter.Export(compressed, folder));
        Directory.CreateDirectory(dir.File("full"));
        File.WriteAllText(Path.Combine(dir.File("full"), "keep.txt"), "x");
        Assert.Throws<ShrinkException>(() => GptqSafetensorsExporter.Export(compressed, dir.File("full")));
        Assert.Equal(before, Directory.GetFiles(folder).ToDictionary(f => f, f => new FileInfo(f).Length));
        Assert.Equal(["keep.txt"], Directory.GetFileSystemEntries(dir.File("full")).Select(Path.GetFileName));
        Assert.DoesNotContain(Directory.GetDirectories(Path.GetDirectoryName(folder)!), d => d.Contains(".tmp-"));
    }
}
