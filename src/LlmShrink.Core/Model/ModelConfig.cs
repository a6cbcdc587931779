namespace LlmShrink.Model;

/// <summary>How rotary position embedding pairs up the dimensions of a head.</summary>
public enum RopeStyle
{
    /// <summary>Hugging Face "rotate half": dimension i pairs with i + headDim/2 (GPT-NeoX style).</summary>
    RotateHalf,
    /// <summary>Adjacent pairs (2i, 2i+1), as in Meta's original Llama, llama2.c and GGUF llama files,
    /// whose Q/K rows llama.cpp's converter permuted so that this style computes the same function.</summary>
    Interleaved,
}

/// <summary>Llama 3's frequency-dependent RoPE scaling (<c>rope_scaling.rope_type = "llama3"</c>).</summary>
public sealed record Llama3RopeScaling(float Factor, float LowFreqFactor, float HighFreqFactor, int OriginalMaxPositions);

/// <summary>
/// Hyper-parameters of a decoder-only transformer of the Llama family (llama, mistral, qwen2, qwen3),
/// whatever format it came from. Tensor names are always the Hugging Face ones (see <see cref="TensorNames"/>).
/// </summary>
public sealed record ModelConfig
{
    /// <summary>"llama", "mistral", "qwen2" or "qwen3".</summary>
    public required string Architecture { get; init; }
    public required int HiddenSize { get; init; }
    public required int IntermediateSize { get; init; }
    public required int NumLayers { get; init; }
    public required int NumHeads { get; init; }
    public required int NumKvHeads { get; init; }
    public required int HeadDim { get; init; }
    public required int VocabSize { get; init; }
    public int MaxPositions { get; init; } = 2048;
    public float RmsNormEps { get; init; } = 1e-5f;
    public float RopeTheta { get; init; } = 10000f;
    public Llama3RopeScaling? RopeScaling { get; init; }
    public RopeStyle RopeStyle { get; init; } = RopeStyle.RotateHalf;
    /// <summary>lm_head shares the token embedding matrix.</summary>
    public bool TiedEmbeddings { get; init; }
    /// <summary>q/k/v projections have a bias (qwen2).</summary>
    public bool AttentionBias { get; init; }
    /// <summary>RMSNorm over each head of q and k before RoPE (qwen3).</summary>
    public bool QkNorm { get; init; }
    /// <summary>Mistral's sliding attention window; null = full attention.</summary>
    public int? SlidingWindow { get; init; }
    public int BosTokenId { get; init; } = 1;
    public int EosTokenId { get; init; } = 2;

    public int QDim => NumHeads * HeadDim;
    public int KvDim => NumKvHeads * HeadDim;

    /// <summary>Checks the numbers are consistent; <paramref name="source"/> names the file in the error.</summary>
    public void Validate(string source)
    {
        void Require(bool ok, string problem) { if (!ok) throw ShrinkException.InFile(source, problem); }
        Require(Architecture is "llama" or "mistral" or "qwen2" or "qwen3", $"unsupported architecture '{Architecture}' (supported: llama, mistral, qwen2, qwen3)");
        Require(HiddenSize > 0 && IntermediateSize > 0 && NumLayers > 0 && NumHeads > 0 && NumKvHeads > 0 && HeadDim > 0 && VocabSize > 0,
            "model dimensions must all be positive");
        Require(HiddenSize <= 1 << 16 && IntermediateSize <= 1 << 18 && NumLayers <= 1024 && NumHeads <= 1024 && HeadDim <= 1024 && VocabSize <= 1 << 22,
            "model dimensions are implausibly large");
        Require(NumHeads % NumKvHeads == 0, $"{NumHeads} attention heads is not a multiple of {NumKvHeads} key/value heads");
        Require(HeadDim % 2 == 0, $"head dimension {HeadDim} must be even for rotary embeddings");
        Require(RmsNormEps > 0 && float.IsFinite(RmsNormEps), "rms_norm_eps must be positive");
        Require(RopeTheta > 0 && float.IsFinite(RopeTheta), "rope_theta must be positive");
    }
}
