using System.Buffers.Binary;
using LlmShrink.Formats;
using LlmShrink.Formats.Safetensors;
using LlmShrink.Model;
using Xunit;

namespace LlmShrink.Tests;

public class HfModelTests
{
    [Fact]
    public void TinyLitLoads()
    {
        using var model = HfModelLoader.Load(SharedData.TinyLit);
        var c = model.Config;
        Assert.Equal("safetensors", model.Format);
        Assert.Equal(SharedData.TinyLit, model.Source);
        Assert.Equal((256, 8, 8, 4, 32, 768, 4096), (c.HiddenSize, c.NumLayers, c.NumHeads, c.NumKvHeads, c.HeadDim, c.IntermediateSize, c.VocabSize));
        Assert.False(c.TiedEmbeddings);

        var w = model.Weights;
        Assert.Equal(2 + 1 + 8 * 9, w.Count); // embedding, lm_head, final norm, 9 per layer
        Assert.All(w.All, t => Assert.Equal(TensorType.F32, t.Type));
        Assert.Single(w.Files);
        Assert.Equal(new FileInfo(Path.Combine(SharedData.TinyLit, "model.safetensors")).Length, model.BytesOnDisk);

        Assert.Equal([4096L, 256L], w.Get(TensorNames.Embedding).Shape);
        Assert.Equal([4096L, 256L], w.Get(TensorNames.LmHead).Shape);
        Assert.Equal([256L], w.Get(TensorNames.FinalNorm).Shape);
        Assert.Equal([256L, 256L], w.Get(TensorNames.Layer(3, TensorNames.Q)).Shape);
        Assert.Equal([128L, 256L], w.Get(TensorNames.Layer(3, TensorNames.K)).Shape);
        Assert.Equal([128L, 256L], w.Get(TensorNames.Layer(3, TensorNames.V)).Shape);
        Assert.Equal([768L, 256L], w.Get(TensorNames.Layer(0, TensorNames.Gate)).Shape);
        Assert.Equal([256L, 768L], w.Get(TensorNames.Layer(7, TensorNames.Down)).Shape);

        // Golden values read from the file with Python's struct module.
        var norm = w.Get(TensorNames.FinalNorm).ToFloatArray();
        Assert.Equal(1.2101253271102905f, norm[0]);
        Assert.Equal(1.2057921886444092f, norm[255]);
        var row = new float[768];
        w.Get(TensorNames.Layer(7, TensorNames.Down)).DequantizeRow(255, row);
        Assert.Equal(0.0016395122511312366f, row[767]);
        var head = new float[256];
        w.Get(TensorNames.LmHead).DequantizeRow(1234, head);
        Assert.Equal(0.03157340735197067f, head[17]);
    }

    private const string TinyConfig = """
        {"model_type": "MODEL_TYPE", "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 2,
         "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": HEAD_DIM, "vocab_size": 10, "tie_word_embeddings": TIED}
        """;

    /// <summary>The canonical tensors a config implies, each filled with its index so values can be checked after loading.</summary>
    private static List<SafetensorsWriter.Entry> TensorsFor(ModelConfig c, bool withLmHead)
    {
        var shapes = new List<(string, long[])>
        {
            (TensorNames.Embedding, [c.VocabSize, c.HiddenSize]),
            (TensorNames.FinalNorm, [c.HiddenSize]),
        };
        if (withLmHead) shapes.Add((TensorNames.LmHead, [c.VocabSize, c.HiddenSize]));
        for (int i = 0; i < c.NumLayers; i++)
        {
            shapes.Add((TensorNames.Layer(i, TensorNames.AttnNorm), [c.HiddenSize]));
            shapes.Add((TensorNames.Layer(i, TensorNames.Q), [c.QDim, c.HiddenSize]));
            shapes.Add((TensorNames.Layer(i, TensorNames.K), [c.KvDim, c.HiddenSize]));
            shapes.Add((TensorNames.Layer(i, TensorNames.V), [c.KvDim, c.HiddenSize]));
            shapes.Add((TensorNames.Layer(i, TensorNames.O), [c.HiddenSize, c.QDim]));
            if (c.AttentionBias)
            {
                shapes.Add((TensorNames.Layer(i, TensorNames.QBias), [c.QDim]));
                shapes.Add((TensorNames.Layer(i, TensorNames.KBias), [c.KvDim]));
                shapes.Add((TensorNames.Layer(i, TensorNames.VBias), [c.KvDim]));
            }
            if (c.QkNorm)
            {
                shapes.Add((TensorNames.Layer(i, TensorNames.QNorm), [c.HeadDim]));
                shapes.Add((TensorNames.Layer(i, TensorNames.KNorm), [c.HeadDim]));
            }
            shapes.Add((TensorNames.Layer(i, TensorNames.FfnNorm), [c.HiddenSize]));
            shapes.Add((TensorNames.Layer(i, TensorNames.Gate), [c.IntermediateSize, c.HiddenSize]));
            shapes.Add((TensorNames.Layer(i, TensorNames.Up), [c.IntermediateSize, c.HiddenSize]));
            shapes.Add((TensorNames.Layer(i, TensorNames.Down), [c.HiddenSize, c.IntermediateSize]));
        }
        return shapes.Select((s, index) => new SafetensorsWriter.Entry(s.Item1, TensorType.F32, s.Item2, stream =>
        {
            long n = s.Item2.Aggregate(1L, (a, b) => a * b);
            var bytes = new byte[4];
            for (long k = 0; k < n; k++) { BinaryPrimitives.WriteSingleLittleEndian(bytes, index + k / 1000f); stream.Write(bytes); }
        })).ToList();
    }

    private static ModelConfig WriteFolder(TempDir dir, string modelType, bool tied, bool withLmHead, int headDim = 4,
        Func<List<SafetensorsWriter.Entry>, List<SafetensorsWriter.Entry>>? edit = null)
    {
        File.WriteAllText(dir.File("config.json"), TinyConfig.Replace("MODEL_TYPE", modelType)
            .Replace("HEAD_DIM", headDim.ToString()).Replace("TIED", tied ? "true" : "false"));
        var config = HfConfig.Parse(dir.File("config.json"));
        var entries = TensorsFor(config, withLmHead);
        SafetensorsWriter.Write(dir.File("model.safetensors"), edit is null ? entries : edit(entries));
        return config;
    }

    [Theory]
    [InlineData("llama", 4)]
    [InlineData("mistral", 4)]
    [InlineData("qwen2", 4)]
    [InlineData("qwen3", 8)] // head_dim × heads (16) differs from hidden_size (8)
    public void SyntheticTiedModelOfEachArchitectureLoads(string modelType, int headDim)
    {
        using var dir = new TempDir();
        var config = WriteFolder(dir, modelType, tied: true, withLmHead: false, headDim);
        using var model = HfModelLoader.Load(dir.Path);
        Assert.Equal(config, model.Config);
        Assert.Equal(TensorsFor(config, false).Count, model.Weights.Count);
        Assert.Null(model.Weights.Find(TensorNames.LmHead));
        var q1 = model.Weights.Get(TensorNames.Layer(1, TensorNames.Q));
        Assert.Equal([(long)config.QDim, 8L], q1.Shape);
        int index = TensorsFor(config, false).FindIndex(e => e.Name == q1.Name);
        Assert.Equal(index + 9 / 1000f, q1.ToFloatArray()[9]);
    }

    [Fact]
    public void UntiedModelWithoutLmHeadIsRefused()
    {
        using var dir = new TempDir();
        WriteFolder(dir, "llama", tied: false, withLmHead: false);
        var e = Assert.Throws<ShrinkException>(() => HfModelLoader.Load(dir.Path));
        Assert.Contains("'lm_head.weight'", e.Message);
        Assert.Contains("tie_word_embeddings", e.Message);
    }

    [Fact]
    public void MissingLayerTensorIsRefused()
    {
        using var dir = new TempDir();
        WriteFolder(dir, "llama", tied: false, withLmHead: true, edit: entries => entries.Where(e => e.Name != "model.layers.1.mlp.up_proj.weight").ToList());
        var e = Assert.Throws<ShrinkException>(() => HfModelLoader.Load(dir.Path));
        Assert.Equal($"{dir.Path}: missing tensor 'model.layers.1.mlp.up_proj.weight'", e.Message);
    }

    [Theory]
    [InlineData("qwen2", "model.layers.0.self_attn.k_proj.bias")]
    [InlineData("qwen3", "model.layers.1.self_attn.q_norm.weight")]
    public void ArchitectureSpecificTensorsAreRequired(string modelType, string dropped)
    {
        using var dir = new TempDir();
        WriteFolder(dir, modelType, tied: true, withLmHead: false, headDim: 4, edit: entries => entries.Where(e => e.Name != dropped).ToList());
        var e = Assert.Throws<ShrinkException>(() => HfModelLoader.Load(dir.Path));
        Assert.Contains($"'{dropped}'", e.Message);
    }

    [Fact]
    public void WrongShapeIsRefusedWithTheTensorName()
    {
        using var dir = new TempDir();
        WriteFolder(dir, "llama", tied: true, withLmHead: false, edit: entries => entries
            .Select(e => e.Name == "model.layers.0.self_attn.o_proj.weight" ? e with { Shape = [4, 16], WriteData = s => s.Write(new byte[256]) } : e).ToList());
        var e = Assert.Throws<ShrinkException>(() => HfModelLoader.Load(dir.Path));
        Assert.Contains("model.safetensors: tensor 'model.layers.0.self_attn.o_proj.weight' has shape [4, 16] but the model configuration implies [8, 8]", e.Message);
    }

    [Fact]
    public void ShardedFolderLoads()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("config.json"), TinyConfig.Replace("MODEL_TYPE", "llama").Replace("HEAD_DIM", "4").Replace("TIED", "false"));
        var config = HfConfig.Parse(dir.File("config.json"));
        var entries = TensorsFor(config, withLmHead: true);
        int half = entries.Count / 2;
        SafetensorsWriter.Write(dir.File("model-00001-of-00002.safetensors"), entries.Take(half).ToList());
        SafetensorsWriter.Write(dir.File("model-00002-of-00002.safetensors"), entries.Skip(half).ToList());
        var map = entries.Select((e, i) => $"\"{e.Name}\": \"model-0000{(i < half ? 1 : 2)}-of-00002.safetensors\"");
        File.WriteAllText(dir.File("model.safetensors.index.json"), $"{{\"metadata\": {{}}, \"weight_map\": {{{string.Join(", ", map)}}}}}");

        using var model = HfModelLoader.Load(dir.Path);
        Assert.Equal(entries.Count, model.Weights.Count);
        Assert.Equal(2, model.Weights.Files.Count);
        int last = entries.Count - 1;
        Assert.Equal(last + 0.005f, model.Weights.Get(entries[last].Name).ToFloatArray()[5]);
    }

    [Fact]
    public void FolderWithOnlyPyTorchPickleIsRefused()
    {
        using var dir = new TempDir();
        File.Copy(Path.Combine(SharedData.TinyLit, "config.json"), dir.File("config.json"));
        File.WriteAllBytes(dir.File("pytorch_model.bin"), [(byte)'P', (byte)'K', 3, 4, 0, 0]);
        var e = Assert.Throws<ShrinkException>(() => HfModelLoader.Load(dir.Path));
        Assert.StartsWith(dir.File("pytorch_model.bin") + ": ", e.Message);
        Assert.Contains("pickle", e.Message);
        Assert.Contains("safe_serialization=True", e.Message);
    }

    [Fact]
    public void FolderWithoutWeightsOrConfigIsRefused()
    {
        using var dir = new TempDir();
        var noConfig = Assert.Throws<ShrinkException>(() => HfModelLoader.Load(dir.Path));
        Assert.Contains("config.json is missing", noConfig.Message);
        File.Copy(Path.Combine(SharedData.TinyLit, "config.json"), dir.File("config.json"));
        var noWeights = Assert.Throws<ShrinkException>(() => HfModelLoader.Load(dir.Path));
        Assert.Equal($"{dir.Path}: no weights found (expected model.safetensors or model.safetensors.index.json)", noWeights.Message);
    }

    [Fact]
    public void ModelLoaderRoutesFoldersHere()
    {
        using var model = ModelLoader.Load(SharedData.TinyLit);
        Assert.Equal("safetensors", model.Format);
        Assert.Equal(75, model.Weights.Count);
    }
}
