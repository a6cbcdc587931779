using LlmShrink.Formats.Gguf;

namespace LlmShrink.Tests;

/// <summary>Tiny synthetic GGUF models (F32, deterministic weights) in llama.cpp's naming, for loader and fuzz tests.</summary>
internal static class GgufTestModels
{
    public sealed record Spec(
        string Architecture = "llama",
        int Hidden = 8,
        int Layers = 2,
        int Heads = 2,
        int KvHeads = 1,
        int Ffn = 16,
        int HeadDim = 4,
        bool Tied = false,
        bool Bias = false,
        bool QkNorm = false,
        bool Tokenizer = true,
        uint ContextLength = 128,
        int[]? LayerHeads = null,
        int[]? LayerKvHeads = null,
        int[]? LayerFfn = null);

    public static readonly string[] Tokens = ["<unk>", "<s>", "</s>", "▁a", "▁b", "c"];

    public static GgufTestWriter Writer(Spec s)
    {
        string a = s.Architecture;
        var w = new GgufTestWriter()
            .AddString("general.architecture", a)
            .AddUInt32($"{a}.context_length", s.ContextLength)
            .AddUInt32($"{a}.embedding_length", (uint)s.Hidden)
            .AddUInt32($"{a}.block_count", (uint)s.Layers)
            .AddFloat($"{a}.attention.layer_norm_rms_epsilon", 1e-6f)
            .AddFloat($"{a}.rope.freq_base", 500000f);
        // A per-layer array replaces the scalar when given (llama.cpp's get_key_or_arr reads either).
        void Width(string key, int scalar, int[]? perLayer)
        {
            if (perLayer is null) w.AddUInt32(key, (uint)scalar);
            else w.AddInt32s(key, perLayer);
        }
        Width($"{a}.feed_forward_length", s.Ffn, s.LayerFfn);
        Width($"{a}.attention.head_count", s.Heads, s.LayerHeads);
        Width($"{a}.attention.head_count_kv", s.KvHeads, s.LayerKvHeads);
        if (s.HeadDim != s.Hidden / s.Heads || s.LayerHeads is not null) w.AddUInt32($"{a}.attention.key_length", (uint)s.HeadDim);
        if (s.Tokenizer)
        {
            w.AddString("tokenizer.ggml.model", a == "llama" ? "llama" : "gpt2")
             .AddStrings("tokenizer.ggml.tokens", Tokens)
             .AddFloats("tokenizer.ggml.scores", 0f, 0f, 0f, -1f, -2f, -3f)
             .AddInt32s("tokenizer.ggml.token_type", 2, 3, 3, 1, 1, 1)
             .AddUInt32("tokenizer.ggml.bos_token_id", 1)
             .AddUInt32("tokenizer.ggml.eos_token_id", 2)
             .AddUInt32("tokenizer.ggml.unknown_token_id", 0);
            if (a != "llama") w.AddStrings("tokenizer.ggml.merges", "▁ a", "▁ b").AddString("tokenizer.ggml.pre", "qwen2");
        }

        int vocab = Tokens.Length;
        int seed = 0;
        void Tensor(string name, params long[] shape) => w.AddF32Tensor(name, shape, i => (seed + i) % 7 * 0.125f - 0.25f);
        Tensor("token_embd.weight", vocab, s.Hidden);
        for (int i = 0; i < s.Layers; i++)
        {
            // Tensors follow the layer's entry when there is one for it (a wrong-length array is for error tests).
            static int At(int[]? perLayer, int i, int scalar) => perLayer is not null && i < perLayer.Length ? perLayer[i] : scalar;
            int q = At(s.LayerHeads, i, s.Heads) * s.HeadDim, kv = At(s.LayerKvHeads, i, s.KvHeads) * s.HeadDim, ffn = At(s.LayerFfn, i, s.Ffn);
            seed = i + 1;
            Tensor($"blk.{i}.attn_norm.weight", s.Hidden);
            Tensor($"blk.{i}.attn_q.weight", q, s.Hidden);
            Tensor($"blk.{i}.attn_k.weight", kv, s.Hidden);
            Tensor($"blk.{i}.attn_v.weight", kv, s.Hidden);
            if (s.Bias)
            {
                Tensor($"blk.{i}.attn_q.bias", q);
                Tensor($"blk.{i}.attn_k.bias", kv);
                Tensor($"blk.{i}.attn_v.bias", kv);
            }
            if (s.QkNorm)
            {
                Tensor($"blk.{i}.attn_q_norm.weight", s.HeadDim);
                Tensor($"blk.{i}.attn_k_norm.weight", s.HeadDim);
            }
            Tensor($"blk.{i}.attn_output.weight", s.Hidden, q);
            Tensor($"blk.{i}.ffn_norm.weight", s.Hidden);
            Tensor($"blk.{i}.ffn_gate.weight", ffn, s.Hidden);
            Tensor($"blk.{i}.ffn_up.weight", ffn, s.Hidden);
            Tensor($"blk.{i}.ffn_down.weight", s.Hidden, ffn);
        }
        Tensor("output_norm.weight", s.Hidden);
        if (!s.Tied) Tensor("output.weight", vocab, s.Hidden);
        return w;
    }

    public static string Save(Spec spec, string path) => Writer(spec).Save(path);

    /// <summary>Everything the loader does short of building a tokenizer (which is another component's job).</summary>
    public static (Model.ModelConfig Config, Formats.TensorSet Weights, Tokenization.GgufVocabulary? Vocabulary) Read(GgufFile gguf)
    {
        var config = Model.GgufModelLoader.ReadConfig(gguf);
        return (config, Model.GgufModelLoader.MapTensors(gguf, config), Model.GgufModelLoader.ReadVocabulary(gguf));
    }
}
