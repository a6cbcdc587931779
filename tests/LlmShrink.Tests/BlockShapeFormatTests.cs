using System.Text.Json.Nodes;
using LlmShrink.Export;
using LlmShrink.Formats;
using LlmShrink.Formats.Gguf;
using LlmShrink.Model;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>What the writers put in config.json and GGUF metadata for uniform and per-block models.</summary>
public class BlockShapeFormatTests
{
    // config.json and GGUF metadata of uniform models as written before per-block shapes existed: transformers, vLLM and
    // llama.cpp must keep reading them unchanged.

    [Fact]
    public void Uniform_config_json_is_the_standard_llama_config()
    {
        using var model = ModelLoader.Load(SharedData.TinyLit);
        Assert.Equal("""
            {"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":256,"intermediate_size":768,"num_hidden_layers":8,"num_attention_heads":8,"num_key_value_heads":4,"head_dim":32,"vocab_size":4096,"max_position_embeddings":2048,"rms_norm_eps":1E-05,"rope_theta":10000,"tie_word_embeddings":false,"hidden_act":"silu","bos_token_id":1,"eos_token_id":2,"attention_bias":false,"mlp_bias":false}
            """, SafetensorsExporter.FromModelConfig(model.Config).ToJsonString());
        Assert.Equal("""
            {"architectures":["Qwen3ForCausalLM"],"model_type":"qwen3","hidden_size":48,"intermediate_size":72,"num_hidden_layers":2,"num_attention_heads":6,"num_key_value_heads":2,"head_dim":8,"vocab_size":67,"max_position_embeddings":2048,"rms_norm_eps":1E-05,"rope_theta":10000,"tie_word_embeddings":false,"hidden_act":"silu","bos_token_id":1,"eos_token_id":2}
            """, SafetensorsExporter.FromModelConfig(SyntheticModel.Config("qwen3")).ToJsonString());
    }

    [Fact]
    public void Uniform_hugging_face_source_keeps_its_config_json_unchanged()
    {
        using var model = ModelLoader.Load(SharedData.TinyLit);
        var original = JsonNode.Parse(File.ReadAllText(Path.Combine(SharedData.TinyLit, "config.json")));
        Assert.True(JsonNode.DeepEquals(original, SafetensorsExporter.ConfigJson(model)));
    }

    [Fact]
    public void Uniform_gguf_metadata_is_unchanged()
    {
        using var dir = new TempDir();
        using var model = ModelLoader.Load(SharedData.TinyLit);
        GgufExporter.Export(model, TensorType.F32, dir.File("tinylit.gguf"));
        using var gguf = GgufFile.Open(dir.File("tinylit.gguf"));
        var written = gguf.Metadata.Where(kv => !kv.Key.StartsWith("tokenizer.", StringComparison.Ordinal))
            .Select(kv => $"{kv.Key} {kv.Value.Type} {kv.Value.Describe()}");
        Assert.Equal(
        [
            "general.alignment UInt32 32",
            "general.architecture String \"llama\"",
            "general.name String \"tinylit-8m\"",
            "general.file_type UInt32 0",
            "llama.vocab_size UInt32 4096",
            "llama.context_length UInt32 2048",
            "llama.embedding_length UInt32 256",
            "llama.feed_forward_length UInt32 768",
            "llama.block_count UInt32 8",
            "llama.attention.head_count UInt32 8",
            "llama.attention.head_count_kv UInt32 4",
            "llama.rope.dimension_count UInt32 32",
            "llama.rope.freq_base Float32 10000",
            "llama.attention.layer_norm_rms_epsilon Float32 1E-05",
        ], written);
    }

    /// <summary>The synthetic model (hidden 48, head size 8) with a narrower second block: 3 heads of 1 KV group, FFN 40.</summary>
    private static ModelConfig PerBlock(string architecture = "llama") =>
        SyntheticModel.Config(architecture).WithLayerShapes([new(6, 2, 72), new(3, 1, 40)]);

    [Fact]
    public void Per_block_config_json_keeps_the_scalar_keys_and_lists_the_widths_under_layer_shapes()
    {
        var config = PerBlock();
        Assert.Equal("""
            {"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":48,"intermediate_size":72,"num_hidden_layers":2,"num_attention_heads":6,"num_key_value_heads":2,"head_dim":8,"vocab_size":67,"max_position_embeddings":2048,"rms_norm_eps":1E-05,"rope_theta":10000,"tie_word_embeddings":false,"hidden_act":"silu","bos_token_id":1,"eos_token_id":2,"layer_shapes":{"num_attention_heads":[6,3],"num_key_value_heads":[2,1],"intermediate_size":[72,40]},"attention_bias":false,"mlp_bias":false}
            """, SafetensorsExporter.FromModelConfig(config).ToJsonString());

        using var dir = new TempDir();
        string path = dir.File("config.json");
        File.WriteAllText(path, SafetensorsExporter.FromModelConfig(config).ToJsonString());
        Assert.Equal(config, HfConfig.Parse(path));

        // A list left out means the scalar key for every layer; lists that agree everywhere give a uniform model.
        var json = SafetensorsExporter.FromModelConfig(SyntheticModel.Config());
        json["layer_shapes"] = JsonNode.Parse("""{"intermediate_size": [72, 40]}""");
        File.WriteAllText(path, json.ToJsonString());
        Assert.Equal([new LayerShape(6, 2, 72), new LayerShape(6, 2, 40)], HfConfig.Parse(path).LayerShapes!);
        json["layer_shapes"] = JsonNode.Parse("""{"intermediate_size": [40, 40]}""");
        File.WriteAllText(path, json.ToJsonString());
        Assert.Equal(SyntheticModel.Config() with { IntermediateSize = 40 }, HfConfig.Parse(path));
    }

    [Fact]
    public void A_hugging_face_source_whose_shapes_changed_gets_only_its_shape_keys_rewritten()
    {
        using var model = ModelLoader.Load(SharedData.TinyLit);
        var original = JsonNode.Parse(File.ReadAllText(Path.Combine(SharedData.TinyLit, "config.json")))!.AsObject();
        LoadedModel With(ModelConfig config) => new() { Source = model.Source, Format = model.Format, Config = config, Weights = model.Weights };
        string[] shapeKeys = ["intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "layer_shapes"];

        var shapes = Enumerable.Range(0, 8).Select(l => l == 2 ? new LayerShape(4, 2, 512) : model.Config.Layer(l)).ToArray();
        var pruned = SafetensorsExporter.ConfigJson(With(model.Config.WithLayerShapes(shapes)));
        foreach (var (key, value) in original)
            if (!shapeKeys.Contains(key)) Assert.True(JsonNode.DeepEquals(value, pruned[key]), key);
        Assert.Equal((768, 8, 8, 4, 32), ((int)pruned["intermediate_size"]!, (int)pruned["num_hidden_layers"]!, (int)pruned["num_attention_heads"]!,
            (int)pruned["num_key_value_heads"]!, (int)pruned["head_dim"]!));
        Assert.Equal("""{"num_attention_heads":[8,8,4,8,8,8,8,8],"num_key_value_heads":[4,4,2,4,4,4,4,4],"intermediate_size":[768,768,512,768,768,768,768,768]}""",
            pruned["layer_shapes"]!.ToJsonString());

        // Whole blocks removed: a uniform model again, just fewer layers.
        var shorter = SafetensorsExporter.ConfigJson(With(model.Config.WithLayerShapes(shapes.Where((_, l) => l != 2).ToArray())));
        Assert.Equal(7, (int)shorter["num_hidden_layers"]!);
        Assert.False(shorter.ContainsKey("layer_shapes"));
    }

    private static ShrinkException ConfigFails(TempDir dir, string layerShapes)
    {
        string path = dir.File("config.json");
        var json = SafetensorsExporter.FromModelConfig(SyntheticModel.Config());
        json["layer_shapes"] = JsonNode.Parse(layerShapes);
        File.WriteAllText(path, json.ToJsonString());
        var e = Assert.Throws<ShrinkException>(() => HfConfig.Parse(path));
        Assert.StartsWith(path + ": ", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        return e;
    }

    [Fact]
    public void Config_json_with_a_wrong_per_layer_list_is_a_one_line_error()
    {
        using var dir = new TempDir();
        Assert.EndsWith("'layer_shapes.intermediate_size' has 3 entries for 2 layers (num_hidden_layers)",
            ConfigFails(dir, """{"intermediate_size": [72, 40, 40]}""").Message);
        Assert.EndsWith("'layer_shapes.num_attention_heads' must be a list of integers", ConfigFails(dir, """{"num_attention_heads": 6}""").Message);
        Assert.EndsWith("'layer_shapes.num_key_value_heads' must be a list of integers", ConfigFails(dir, """{"num_key_value_heads": [2, 1.5]}""").Message);
        Assert.EndsWith("layer 1: 3 attention heads is not a multiple of 2 key/value heads", ConfigFails(dir, """{"num_attention_heads": [6, 3]}""").Message);
        Assert.EndsWith("layer 0: attention heads, key/value heads and intermediate size must all be positive",
            ConfigFails(dir, """{"intermediate_size": [0, 72]}""").Message);
    }

    [Fact]
    public void A_tensor_of_the_wrong_per_layer_shape_is_a_one_line_error_naming_the_file()
    {
        using var dir = new TempDir();
        using (var raw = SyntheticModel.Build(dir.File("raw.bin"), PerBlock()))
            SafetensorsExporter.Export(raw, TensorType.F32, dir.File("hf"));
        using (var loaded = ModelLoader.Load(dir.File("hf")))
            Assert.Equal(PerBlock(), loaded.Config);

        // The config claims block 1 kept its 72 channels; its tensors have 40.
        string configPath = Path.Combine(dir.File("hf"), "config.json");
        var json = JsonNode.Parse(File.ReadAllText(configPath))!;
        json["layer_shapes"]!["intermediate_size"]![1] = 72;
        File.WriteAllText(configPath, json.ToJsonString());
        var e = Assert.Throws<ShrinkException>(() => ModelLoader.Load(dir.File("hf")));
        Assert.StartsWith(Path.Combine(dir.File("hf"), "model.safetensors") + ": ", e.Message);
        Assert.Contains("model.layers.1.mlp.gate_proj.weight", e.Message);
        Assert.Contains("[40, 48]", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Gguf_per_layer_arrays_are_read_and_a_wrong_length_is_a_one_line_error()
    {
        using var dir = new TempDir();
        var spec = new GgufTestModels.Spec("deci", Tokenizer: false, Hidden: 8, Heads: 4, KvHeads: 2, HeadDim: 2, Ffn: 16,
            LayerHeads: [4, 2], LayerKvHeads: [2, 1], LayerFfn: [16, 8]);
        using (var model = ModelLoader.Load(GgufTestModels.Save(spec, dir.File("deci.gguf"))))
        {
            var c = model.Config;
            Assert.Equal(("llama", RopeStyle.Interleaved, 2), (c.Architecture, c.RopeStyle, c.HeadDim));
            Assert.Equal([new LayerShape(4, 2, 16), new LayerShape(2, 1, 8)], c.LayerShapes!);
            Assert.Equal((4, 2, 16), (c.NumHeads, c.NumKvHeads, c.IntermediateSize));
            using var transformer = new Transformer(model, threads: 1);
            var logits = new float[c.VocabSize];
            transformer.Forward([1, 3, 4], transformer.NewCache(3), logits);
            Assert.All(logits, v => Assert.True(float.IsFinite(v)));
        }

        // Only the FFN differs: head counts stay scalars, as llama.cpp's get_key_or_arr allows per key.
        using (var model = ModelLoader.Load(GgufTestModels.Save(spec with { LayerHeads = null, LayerKvHeads = null }, dir.File("ffn.gguf"))))
            Assert.Equal([new LayerShape(4, 2, 16), new LayerShape(4, 2, 8)], model.Config.LayerShapes!);

        string wrong = GgufTestModels.Save(spec with { LayerFfn = [16, 8, 8] }, dir.File("wrong.gguf"));
        var e = Assert.Throws<ShrinkException>(() => ModelLoader.Load(wrong));
        Assert.Equal($"{wrong}: deci.feed_forward_length has 3 entries for 2 blocks", e.Message);
    }

    [Fact]
    public void A_per_block_qwen_model_cannot_be_written_as_gguf()
    {
        using var dir = new TempDir();
        using var model = SyntheticModel.Build(dir.File("qwen2.bin"), PerBlock("qwen2") with { AttentionBias = true });
        var e = Assert.Throws<ShrinkException>(() => GgufExporter.Export(model, TensorType.F32, dir.File("qwen2.gguf")));
        Assert.Equal($"{model.Source}: blocks of different widths cannot be expressed in a GGUF qwen2 file (llama.cpp sizes every qwen2 block like the first)", e.Message);
        Assert.False(File.Exists(dir.File("qwen2.gguf")));
    }

    [Fact]
    public void Per_layer_validation_names_the_layer()
    {
        var c = SyntheticModel.Config();
        void Fails(ModelConfig config, string problem) =>
            Assert.Equal($"x: {problem}", Assert.Throws<ShrinkException>(() => config.Validate("x")).Message);
        Fails(c with { LayerShapes = [new(6, 2, 72)] }, "1 per-layer shapes for 2 layers");
        Fails(c with { LayerShapes = [new(6, 2, 72), new(4, 2, 80)] },
            "the model-wide widths (6 heads, 2 key/value heads, intermediate size 72) must be the largest of the per-layer ones (6, 2, 80)");
        Fails(c.WithLayerShapes([new(6, 2, 72), new(6, 4, 72)]), "layer 1: 6 attention heads is not a multiple of 4 key/value heads");
        // Different group sizes per block are fine as long as each divides.
        c.WithLayerShapes([new(6, 2, 72), new(4, 4, 72)]).Validate("x");
        Assert.True(c.WithLayerShapes([new(6, 2, 72), new(6, 2, 72)]).IsUniform);
        Assert.Null(c.WithLayerShapes([new(6, 2, 72), new(6, 2, 72)]).LayerShapes);
    }
}
