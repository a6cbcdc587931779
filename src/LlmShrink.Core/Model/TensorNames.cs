namespace LlmShrink.Model;

/// <summary>The canonical (Hugging Face) tensor names every loader maps its format's names to.</summary>
public static class TensorNames
{
    public const string Embedding = "model.embed_tokens.weight";
    public const string FinalNorm = "model.norm.weight";
    public const string LmHead = "lm_head.weight";
    /// <summary>lm_head's module path: a packed lm_head stores lm_head.qweight/.qzeros/.scales/.g_idx (or an I8 .weight with .weight_scale).</summary>
    public const string LmHeadModule = "lm_head";
    /// <summary>Per-dimension RoPE frequency divisors (llama.cpp stores Llama 3.1 rope scaling this way in GGUF).</summary>
    public const string RopeFrequencyFactors = "rope_freqs.weight";

    public static string Layer(int i, string suffix) => $"model.layers.{i}.{suffix}";

    public const string AttnNorm = "input_layernorm.weight";
    public const string Q = "self_attn.q_proj.weight";
    public const string K = "self_attn.k_proj.weight";
    public const string V = "self_attn.v_proj.weight";
    public const string O = "self_attn.o_proj.weight";
    public const string QBias = "self_attn.q_proj.bias";
    public const string KBias = "self_attn.k_proj.bias";
    public const string VBias = "self_attn.v_proj.bias";
    public const string QNorm = "self_attn.q_norm.weight";
    public const string KNorm = "self_attn.k_norm.weight";
    public const string FfnNorm = "post_attention_layernorm.weight";
    public const string Gate = "mlp.gate_proj.weight";
    public const string Up = "mlp.up_proj.weight";
    public const string Down = "mlp.down_proj.weight";
}
