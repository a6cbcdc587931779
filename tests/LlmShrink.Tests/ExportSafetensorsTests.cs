using System.Text.Json;
using LlmShrink.Export;
using LlmShrink.Formats;
using LlmShrink.Formats.Safetensors;
using LlmShrink.Model;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>Dense Hugging Face folder exports, loaded back with <see cref="HfModelLoader"/>.</summary>
public class ExportSafetensorsTests
{
    private static readonly int[] Prompt = [1, 403, 407, 261, 378, 426, 395, 271];

    [Fact]
    public void TinyLit_F32_export_is_identical_and_keeps_config_and_tokenizer()
    {
        using var dir = new TempDir();
        using var source = ModelLoader.Load(SharedData.TinyLit);
        string output = dir.File("out");
        SafetensorsExporter.Export(source, TensorType.F32, output);
        using var exported = HfModelLoader.Load(output);

        Assert.Equal(source.Config, exported.Config);
        foreach (string name in source.Weights.Names)
            Assert.Equal(source.Weights.Get(name).ToFloatArray(), exported.Weights.Get(name).ToFloatArray());
        Assert.Equal(File.ReadAllBytes(Path.Combine(SharedData.TinyLit, "tokenizer.model")), File.ReadAllBytes(Path.Combine(output, "tokenizer.model")));
        using var config = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(output, "config.json")));
        Assert.Equal("float32", config.RootElement.GetProperty("torch_dtype").GetString());
        Assert.Equal("LlamaForCausalLM", config.RootElement.GetProperty("architectures")[0].GetString()); // original fields kept
        Assert.Equal(ExportGgufTests.Logits(source, Prompt), ExportGgufTests.Logits(exported, Prompt));
    }

    [Fact]
    public void Sharded_BF16_export_writes_an_index_and_loads_back_rounded()
    {
        using var dir = new TempDir();
        using var source = ModelLoader.Load(SharedData.TinyLit);
        string output = dir.File("sharded");
        SafetensorsExporter.Export(source, TensorType.BF16, output, maxShardBytes: 5_000_000);

        Assert.False(File.Exists(Path.Combine(output, "model.safetensors")));
        var shards = Directory.GetFiles(output, "model-*-of-*.safetensors");
        Assert.True(shards.Length >= 3, $"{shards.Length} shards");
        using var index = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(output, SafetensorsIndex.FileName)));
        Assert.Equal(source.Weights.All.Sum(t => t.ElementCount) * 2, index.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64());

        using var exported = HfModelLoader.Load(output);
        foreach (string name in source.Weights.Names)
        {
            var written = exported.Weights.Get(name);
            Assert.Equal(TensorType.BF16, written.Type);
            var expected = source.Weights.Get(name).ToFloatArray().Select(v => TensorDecoding.BFloat16ToSingle(TensorEncoding.SingleToBFloat16(v)));
            Assert.Equal(expected, written.ToFloatArray());
        }
    }

    [Fact]
    public void Stories260K_export_unpermutes_q_and_k_and_round_trips_back_to_the_same_gguf_tensors()
    {
        using var dir = new TempDir();
        using var source = ModelLoader.Load(SharedData.Stories260K);
        string folder = dir.File("hf");
        SafetensorsExporter.Export(source, TensorType.F32, folder);
        using var hf = HfModelLoader.Load(folder);

        Assert.Equal(RopeStyle.RotateHalf, hf.Config.RopeStyle);
        var unpermute = RopeRowOrder.SourceRow(RopeStyle.Interleaved, RopeStyle.RotateHalf, source.Config.HeadDim);
        foreach (string name in source.Weights.Names)
            Assert.Equal(ExportGgufTests.Expected(source.Weights.Get(name), ExportGgufTests.IsQOrK(name) ? unpermute : null), hf.Weights.Get(name).ToFloatArray());
        var text = "Once upon a time, there was a little girl.";
        Assert.Equal(source.RequireTokenizer().Encode(text, true), hf.RequireTokenizer().Encode(text, true));

        // HF → GGUF permutes back: the original rows, exactly.
        string gguf = dir.File("back.gguf");
        GgufExporter.Export(hf, TensorType.F32, gguf);
        using var back = GgufModelLoader.Load(gguf);
        foreach (string name in source.Weights.Names)
            Assert.Equal(source.Weights.Get(name).ToFloatArray(), back.Weights.Get(name).ToFloatArray());
        Assert.Equal(ExportGgufTests.Logits(source, Prompt), ExportGgufTests.Logits(back, Prompt));
    }

    [Fact]
    public void Refuses_bad_arguments_and_input_folders()
    {
        using var dir = new TempDir();
        using var source = ModelLoader.Load(SharedData.TinyLit);
        Assert.Contains("--dtype Q8_0", Assert.Throws<ShrinkException>(() => SafetensorsExporter.Export(source, TensorType.Q8_0, dir.File("a"))).Message);
        Assert.Throws<ShrinkException>(() => SafetensorsExporter.Export(source, TensorType.F32, SharedData.TinyLit));
        Assert.Throws<ShrinkException>(() => SafetensorsExporter.Export(source, TensorType.F32, Path.GetDirectoryName(SharedData.TinyLit)!));
        File.WriteAllText(dir.File("busy.txt"), "x");
        Assert.Contains("not empty", Assert.Throws<ShrinkException>(() => SafetensorsExporter.Export(source, TensorType.F32, dir.Path)).Message);
        Assert.Single(Directory.GetFileSystemEntries(dir.Path)); // nothing half-written left behind
    }
}
