using LlmShrink.Model;
using Xunit;

namespace LlmShrink.Tests;

public class HfConfigTests
{
    private static ModelConfig ParseJson(TempDir dir, string json)
    {
        string path = dir.File("config.json");
        File.WriteAllText(path, json);
        return HfConfig.Parse(path);
    }

    private static ShrinkException Fails(string json)
    {
        using var dir = new TempDir();
        var e = Assert.Throws<ShrinkException>(() => ParseJson(dir, json));
        Assert.StartsWith(dir.File("config.json") + ": ", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        return e;
    }

    [Fact]
    public void TinyLitConfig()
    {
        var c = HfConfig.Parse(Path.Combine(SharedData.TinyLit, "config.json"));
        Assert.Equal("llama", c.Architecture);
        Assert.Equal((256, 768, 8, 8, 4, 32, 4096), (c.HiddenSize, c.IntermediateSize, c.NumLayers, c.NumHeads, c.NumKvHeads, c.HeadDim, c.VocabSize));
        Assert.Equal(2048, c.MaxPositions);
        Assert.Equal(1e-5f, c.RmsNormEps);
        Assert.Equal(10000f, c.RopeTheta);
        Assert.False(c.TiedEmbeddings);
        Assert.False(c.AttentionBias);
        Assert.False(c.QkNorm);
        Assert.Null(c.RopeScaling);
        Assert.Null(c.SlidingWindow);
        Assert.Equal(RopeStyle.RotateHalf, c.RopeStyle);
        Assert.Equal((1, 2), (c.BosTokenId, c.EosTokenId));
    }

    [Fact]
    public void Llama32WithLlama3RopeScalingAndEosList()
    {
        using var dir = new TempDir();
        var c = ParseJson(dir, """
            {
              "architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
              "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256,
              "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
              "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                               "original_max_position_embeddings": 8192, "rope_type": "llama3"},
              "tie_word_embeddings": true, "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
              "torch_dtype": "bfloat16", "attention_bias": false, "mlp_bias": false, "pretraining_tp": 1
            }
            """);
        Assert.Equal(new Llama3RopeScaling(32f, 1f, 4f, 8192), c.RopeScaling);
        Assert.Equal(500000f, c.RopeTheta);
        Assert.Equal(131072, c.MaxPositions);
        Assert.True(c.TiedEmbeddings);
        Assert.Equal((128000, 128001), (c.BosTokenId, c.EosTokenId));
        Assert.Equal((64, 8, 512), (c.HeadDim, c.NumKvHeads, c.KvDim));
    }

    [Fact]
    public void OldStyleRopeScalingKeyTypeAndTransformers5RopeParameters()
    {
        using var dir = new TempDir();
        var a = ParseJson(dir, """
            {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100,
             "rope_scaling": {"type": "llama3", "factor": 8, "low_freq_factor": 1, "high_freq_factor": 4, "original_max_position_embeddings": 8192}}
            """);
        Assert.Equal(new Llama3RopeScaling(8f, 1f, 4f, 8192), a.RopeScaling);
        Assert.Equal(10000f, a.RopeTheta);
        Assert.Equal(1e-6f, a.RmsNormEps); // LlamaConfig's default
        Assert.Equal((4, 16), (a.NumKvHeads, a.HeadDim)); // defaults: kv heads = heads, head_dim = hidden / heads

        var b = ParseJson(dir, """
            {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100,
             "rope_parameters": {"rope_type": "default", "rope_theta": 250000.0}}
            """);
        Assert.Null(b.RopeScaling);
        Assert.Equal(250000f, b.RopeTheta);
    }

    [Fact]
    public void Mistral()
    {
        using var dir = new TempDir();
        const string body = """
            "model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "tie_word_embeddings": false, "head_dim": null
            """;
        var v01 = ParseJson(dir, "{" + body + """, "sliding_window": 4096}""");
        Assert.Equal(4096, v01.SlidingWindow);
        Assert.Equal(128, v01.HeadDim);
        Assert.Equal(1_000_000f, v01.RopeTheta);
        Assert.False(v01.AttentionBias);
        var v02 = ParseJson(dir, "{" + body + """, "sliding_window": null}""");
        Assert.Null(v02.SlidingWindow);
        var absent = ParseJson(dir, "{" + body + "}");
        Assert.Equal(4096, absent.SlidingWindow); // MistralConfig's default
    }

    [Fact]
    public void Qwen2HasAttentionBiasAndSlidingWindowOnlyWhenEnabled()
    {
        using var dir = new TempDir();
        const string body = """
            "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
            "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
            "max_position_embeddings": 32768, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
            "tie_word_embeddings": true, "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu"
            """;
        var c = ParseJson(dir, "{" + body + """, "use_sliding_window": false, "max_window_layers": 21}""");
        Assert.Equal("qwen2", c.Architecture);
        Assert.True(c.AttentionBias);
        Assert.False(c.QkNorm);
        Assert.True(c.TiedEmbeddings);
        Assert.Null(c.SlidingWindow);
        Assert.Equal(64, c.HeadDim);
        Assert.Equal((151643, 151643), (c.BosTokenId, c.EosTokenId));

        var allWindowed = ParseJson(dir, "{" + body + """, "use_sliding_window": true, "max_window_layers": 0}""");
        Assert.Equal(32768, allWindowed.SlidingWindow);
        var noneWindowed = ParseJson(dir, "{" + body + """, "use_sliding_window": true, "max_window_layers": 24}""");
        Assert.Null(noneWindowed.SlidingWindow);
        Assert.Contains("max_window_layers", Fails("{" + body + """, "use_sliding_window": true, "max_window_layers": 21}""").Message);
    }

    [Fact]
    public void Qwen3HasQkNormAndExplicitHeadDim()
    {
        using var dir = new TempDir();
        var c = ParseJson(dir, """
            {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 1024, "intermediate_size": 3072,
             "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
             "max_position_embeddings": 40960, "rms_norm_eps": 1e-06, "rope_theta": 1000000, "rope_scaling": null,
             "attention_bias": false, "tie_word_embeddings": true, "use_sliding_window": false, "sliding_window": null,
             "max_window_layers": 28, "bos_token_id": 151643, "eos_token_id": 151645}
            """);
        Assert.True(c.QkNorm);
        Assert.False(c.AttentionBias);
        Assert.Equal(128, c.HeadDim);
        Assert.Equal(2048, c.QDim); // head_dim × heads differs from hidden_size in Qwen3
        Assert.Equal(1024, c.KvDim);
        Assert.Equal(151645, c.EosTokenId);
        Assert.Null(c.SlidingWindow);
    }

    [Fact]
    public void UnknownArchitectureIsRefused()
    {
        var e = Fails("""{"model_type": "gpt2", "n_embd": 768}""");
        Assert.EndsWith("config.json: unsupported architecture 'gpt2' (supported: llama, mistral, qwen2, qwen3)", e.Message);
    }

    [Theory]
    [InlineData("linear")]
    [InlineData("dynamic")]
    [InlineData("yarn")]
    [InlineData("longrope")]
    public void OtherRopeScalingsAreRefused(string type)
    {
        var e = Fails("""
            {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "vocab_size": 100, "rope_scaling": {"rope_type": "TYPE", "factor": 4.0}}
            """.Replace("TYPE", type));
        Assert.Contains($"rope_scaling type '{type}' is not supported", e.Message);
    }

    [Theory]
    [InlineData("""{"model_type": "llama", "hidden_size": 64""", "not valid JSON")]
    [InlineData("""[]""", "not a JSON object")]
    [InlineData("""{"hidden_size": 64}""", "missing 'model_type'")]
    [InlineData("""{"model_type": "llama", "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100}""", "missing 'hidden_size'")]
    [InlineData("""{"model_type": "llama", "hidden_size": "64", "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100}""", "'hidden_size' must be an integer")]
    [InlineData("""{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}""", "missing 'vocab_size'")]
    [InlineData("""{"model_type": "llama", "hidden_size": 66, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100}""", "not divisible")]
    [InlineData("""{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 3, "vocab_size": 100}""", "not a multiple of 3")]
    [InlineData("""{"model_type": "llama", "hidden_size": 64, "intermediate_size": -1, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100}""", "positive")]
    [InlineData("""{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100, "hidden_act": "gelu"}""", "hidden_act 'gelu'")]
    [InlineData("""{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100, "attention_bias": true}""", "attention_bias")]
    [InlineData("""{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100, "mlp_bias": true}""", "mlp_bias")]
    [InlineData("""{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100, "rope_scaling": {"rope_type": "llama3", "factor": 8}}""", "missing 'rope_scaling.low_freq_factor'")]
    public void MalformedConfigsAreOneLineErrors(string json, string expected) => Assert.Contains(expected, Fails(json).Message);

    [Fact]
    public void MissingConfigNamesTheFile()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<ShrinkException>(() => HfConfig.Parse(dir.File("config.json")));
        Assert.Equal(dir.File("config.json") + ": file not found", e.Message);
    }
}
