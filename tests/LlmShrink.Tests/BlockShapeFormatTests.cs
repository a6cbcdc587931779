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
}
