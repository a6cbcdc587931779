using LlmShrink.Formats;
using LlmShrink.Formats.Gguf;
using LlmShrink.Model;
using Xunit;

namespace LlmShrink.Tests;

public class GgufModelLoaderTests
{
    [Fact]
    public void Stories260K_config_tensors_and_vocabulary()
    {
        using var gguf = GgufFile.Open(SharedData.Stories260K);
        var (config, weights, vocabulary) = GgufTestModels.Read(gguf);

        Assert.Equal("llama", config.Architecture);
        Assert.Equal(64, config.HiddenSize);
        Assert.Equal(172, config.IntermediateSize);
        Assert.Equal(5, config.NumLayers);
        Assert.Equal(8, config.NumHeads);
        Assert.Equal(4, config.NumKvHeads);
        Assert.Equal(8, config.HeadDim);
        Assert.Equal(512, config.VocabSize);
        Assert.Equal(2048, config.MaxPositions);
        Assert.Equal(1e-5f, config.RmsNormEps);
        Assert.Equal(10000f, config.RopeTheta); // no rope.freq_base key: the default
        Assert.Equal(RopeStyle.Interleaved, config.RopeStyle);
        Assert.False(config.TiedEmbeddings);     // this file stores output.weight explicitly
        Assert.False(config.AttentionBias);
        Assert.False(config.QkNorm);
        Assert.Equal(1, config.BosTokenId);
        Assert.Equal(2, config.EosTokenId);

        Assert.Equal(3 + 5 * 9, weights.Count);
        Assert.Equal([512L, 64L], weights.Get(TensorNames.Embedding).Shape);
        Assert.Equal([512L, 64L], weights.Get(TensorNames.LmHead).Shape);
        Assert.Equal([64L], weights.Get(TensorNames.FinalNorm).Shape);
        Assert.Equal([32L, 64L], weights.Get(TensorNames.Layer(4, TensorNames.K)).Shape);
        Assert.Equal([64L, 172L], weights.Get(TensorNames.Layer(2, TensorNames.Down)).Shape);
        Assert.Same(gguf.FindTensor("blk.3.ffn_up.weight"), weights.Get(TensorNames.Layer(3, TensorNames.Up)));
        Assert.Same(gguf.FindTensor("blk.0.ffn_norm.weight"), weights.Get(TensorNames.Layer(0, TensorNames.FfnNorm)));
        Assert.Same(gguf.File, Assert.Single(weights.Files));

        Assert.NotNull(vocabulary);
        Assert.Equal("llama", vocabulary.Model);
        Assert.Equal(512, vocabulary.Tokens.Length);
        Assert.Equal("<s>", vocabulary.Tokens[vocabulary.BosId]);
        Assert.Equal("</s>", vocabulary.Tokens[vocabulary.EosId]);
        Assert.Equal(0, vocabulary.UnknownId);
        Assert.Equal(512, vocabulary.Scores!.Length);
        Assert.Equal(512, vocabulary.TokenTypes!.Length);
        Assert.Null(vocabulary.Merges);
        Assert.True(vocabulary.AddBos);          // SentencePiece defaults
        Assert.True(vocabulary.AddSpacePrefix);
        Assert.Null(vocabulary.Pre);
    }

    [Fact]
    public void Stories260K_loads_end_to_end_with_its_embedded_tokenizer()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        Assert.Equal("gguf", model.Format);
        Assert.Equal(SharedData.Stories260K, model.Source);
        Assert.Equal(1185376, model.BytesOnDisk);
        Assert.Equal(5, model.Config.NumLayers);
        var tokenizer = model.RequireTokenizer();
        Assert.Equal(512, tokenizer.VocabSize);
        Assert.True(tokenizer.AddBos);
        // ▁Once ▁upon ▁a ▁time are pieces 403 407 261 378 of tokenizer.ggml.tokens; BOS = 1.
        Assert.Equal([1, 403, 407, 261, 378], tokenizer.Encode("Once upon a time", addBos: true));
        Assert.Equal(TensorType.F32, model.Weights.Get(TensorNames.Layer(0, TensorNames.Q)).Type);
    }

    [Fact]
    public void Qwen2_rotate_half_bias_tied_embeddings_and_bpe_vocabulary()
    {
        using var dir = new TempDir();
        string path = GgufTestModels.Save(new GgufTestModels.Spec("qwen2", Tied: true, Bias: true), dir.File("qwen2.gguf"));
        using var gguf = GgufFile.Open(path);
        var (config, weights, vocabulary) = GgufTestModels.Read(gguf);

        Assert.Equal("qwen2", config.Architecture);
        Assert.Equal(RopeStyle.RotateHalf, config.RopeStyle);
        Assert.True(config.TiedEmbeddings);
        Assert.True(config.AttentionBias);
        Assert.False(config.QkNorm);
        Assert.Equal(500000f, config.RopeTheta);
        Assert.Equal(1e-6f, config.RmsNormEps);
        Assert.Equal(4, config.HeadDim); // embedding 8 / 2 heads
        Assert.Null(weights.Find(TensorNames.LmHead));
        Assert.Equal([4L], weights.Get(TensorNames.Layer(1, TensorNames.KBias)).Shape);
        Assert.Equal([8L], weights.Get(TensorNames.Layer(0, TensorNames.QBias)).Shape);
        Assert.Equal(1 + 2 * 12 + 1, weights.Count);

        Assert.Equal("gpt2", vocabulary!.Model);
        Assert.Equal(["▁ a", "▁ b"], vocabulary.Merges!);
        Assert.Equal("qwen2", vocabulary.Pre);
        Assert.False(vocabulary.AddBos);         // byte-level BPE defaults
        Assert.False(vocabulary.AddSpacePrefix);
    }

    [Fact]
    public void Qwen3_qk_norm_and_explicit_head_dimension()
    {
        using var dir = new TempDir();
        string path = GgufTestModels.Save(new GgufTestModels.Spec("qwen3", HeadDim: 8, QkNorm: true, Tokenizer: false), dir.File("qwen3.gguf"));
        using var gguf = GgufFile.Open(path);
        var (config, weights, vocabulary) = GgufTestModels.Read(gguf);

        Assert.True(config.QkNorm);
        Assert.Equal(8, config.HeadDim);           // key_length, not 8 / 2
        Assert.Equal(16, config.QDim);
        Assert.Equal(6, config.VocabSize);         // no tokenizer: rows of token_embd
        Assert.Null(vocabulary);
        Assert.Equal([8L], weights.Get(TensorNames.Layer(1, TensorNames.QNorm)).Shape);
        Assert.Equal([16L, 8L], weights.Get(TensorNames.Layer(0, TensorNames.Q)).Shape);
        Assert.Equal([8L, 16L], weights.Get(TensorNames.Layer(0, TensorNames.O)).Shape);
    }

    private static string LoadFails(GgufTestWriter writer)
    {
        using var dir = new TempDir();
        string path = writer.Save(dir.File("bad.gguf"));
        using var gguf = GgufFile.Open(path);
        var error = Assert.Throws<ShrinkException>(() => GgufTestModels.Read(gguf));
        Assert.StartsWith(path + ": ", error.Message);
        return error.Message;
    }

    [Fact]
    public void Unsupported_architecture() =>
        Assert.Contains("unsupported architecture 'gpt2'", LoadFails(GgufTestModels.Writer(new GgufTestModels.Spec("gpt2"))));

    [Fact]
    public void Unsupported_architecture_fails_through_the_public_loader_too()
    {
        using var dir = new TempDir();
        string path = GgufTestModels.Save(new GgufTestModels.Spec("falcon"), dir.File("falcon.gguf"));
        var error = Assert.Throws<ShrinkException>(() => GgufModelLoader.Load(path));
        Assert.StartsWith($"{path}: unsupported architecture 'falcon'", error.Message);
    }

    [Fact]
    public void Unsupported_rope_scaling_and_bad_context_length()
    {
        var linear = GgufTestModels.Writer(new GgufTestModels.Spec()).AddString("llama.rope.scaling.type", "linear");
        Assert.EndsWith("RoPE scaling 'linear' is not supported", LoadFails(linear));
        var none = GgufTestModels.Writer(new GgufTestModels.Spec()).AddString("llama.rope.scaling.type", "none");
        using (var dir = new TempDir())
        using (var gguf = GgufFile.Open(none.Save(dir.File("none.gguf"))))
            Assert.Equal(128, GgufTestModels.Read(gguf).Config.MaxPositions);

        Assert.EndsWith("qwen3.context_length = 0 must be positive", LoadFails(GgufTestModels.Writer(new GgufTestModels.Spec("qwen3", ContextLength: 0))));
    }

    [Fact]
    public void Shape_mismatch_names_tensor_expected_and_actual_shape()
    {
        var writer = GgufTestModels.Writer(new GgufTestModels.Spec());
        int k = writer.Tensors.FindIndex(t => t.Name == "blk.1.attn_k.weight");
        writer.Tensors[k] = new GgufTestWriter.Tensor { Name = "blk.1.attn_k.weight", Ne = [4, 8], TypeId = 0, Data = new byte[4 * 32] };
        Assert.EndsWith("tensor 'blk.1.attn_k.weight' has shape [8, 4], expected [4, 8]", LoadFails(writer));
    }

    [Fact]
    public void Missing_tensor()
    {
        var writer = GgufTestModels.Writer(new GgufTestModels.Spec());
        writer.Tensors.RemoveAll(t => t.Name == "blk.0.ffn_up.weight");
        Assert.EndsWith("missing tensor 'blk.0.ffn_up.weight'", LoadFails(writer));
    }

    [Fact]
    public void Tensor_the_model_would_not_use()
    {
        var writer = GgufTestModels.Writer(new GgufTestModels.Spec(Layers: 1));
        writer.AddF32Tensor("blk.1.attn_norm.weight", [8], i => 1f); // a layer beyond block_count
        Assert.Contains("unexpected tensor 'blk.1.attn_norm.weight'", LoadFails(writer));
    }

    [Fact]
    public void Inconsistent_head_counts_are_reported()
    {
        var writer = GgufTestModels.Writer(new GgufTestModels.Spec(Heads: 2, KvHeads: 1));
        writer.AddUInt32("llama.attention.head_count_kv", 3);
        Assert.Contains("'llama.attention.head_count_kv' appears twice", Assert.Throws<ShrinkException>(() =>
        {
            using var dir = new TempDir();
            GgufFile.Open(writer.Save(dir.File("dup.gguf"))).Dispose();
        }).Message);

        var odd = GgufTestModels.Writer(new GgufTestModels.Spec(Heads: 2, KvHeads: 3));
        Assert.Contains("not a multiple of 3 key/value heads", LoadFails(odd));
    }

    [Fact]
    public void Vocabulary_arrays_must_match_the_token_count()
    {
        var writer = GgufTestModels.Writer(new GgufTestModels.Spec(Tokenizer: false))
            .AddString("tokenizer.ggml.model", "llama")
            .AddStrings("tokenizer.ggml.tokens", GgufTestModels.Tokens)
            .AddFloats("tokenizer.ggml.scores", 0f, 1f);
        Assert.EndsWith("tokenizer.ggml.scores has 2 entries for 6 tokens", LoadFails(writer));
    }

    [Fact]
    public void Bos_id_outside_the_vocabulary()
    {
        var writer = GgufTestModels.Writer(new GgufTestModels.Spec(Tokenizer: false))
            .AddString("tokenizer.ggml.model", "llama")
            .AddStrings("tokenizer.ggml.tokens", GgufTestModels.Tokens)
            .AddUInt32("tokenizer.ggml.bos_token_id", 6);
        Assert.Contains("tokenizer.ggml.bos_token_id = 6 is not a token id", LoadFails(writer));
    }
}
