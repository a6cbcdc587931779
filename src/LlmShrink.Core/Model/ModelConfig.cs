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

    private ShapeList? _layerShapes;

    /// <summary>
    /// Each block's widths when they differ from block to block (structurally pruned models); null when every block
    /// has <see cref="NumHeads"/>, <see cref="NumKvHeads"/> and <see cref="IntermediateSize"/>. When set, it has
    /// <see cref="NumLayers"/> entries and those three are the largest over the blocks: scratch buffers are sized by
    /// them and config.json's scalar keys say them. <see cref="WithLayerShapes"/> builds such a configuration.
    /// </summary>
    public IReadOnlyList<LayerShape>? LayerShapes
    {
        get => _layerShapes;
        init => _layerShapes = value is null ? null : new ShapeList([.. value]);
    }

    /// <summary>Whether every block has the same widths (an ordinary Llama-family model).</summary>
    public bool IsUniform => _layerShapes is null || _layerShapes.Uniform;

    /// <summary>Block <paramref name="layer"/>'s widths.</summary>
    public LayerShape Layer(int layer)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)layer, (uint)NumLayers, nameof(layer));
        return _layerShapes?[layer] ?? new LayerShape(NumHeads, NumKvHeads, IntermediateSize);
    }

    /// <summary>Query width of every block, or with per-block shapes of the widest (what scratch buffers hold).</summary>
    public int QDim => NumHeads * HeadDim;
    /// <summary>Key/value width of every block, or with per-block shapes of the widest.</summary>
    public int KvDim => NumKvHeads * HeadDim;
    public int QDimOf(int layer) => Layer(layer).Heads * HeadDim;
    public int KvDimOf(int layer) => Layer(layer).KvHeads * HeadDim;

    /// <summary>
    /// This configuration with one block per entry of <paramref name="layers"/> (so removing blocks is leaving them
    /// out), the model-wide widths set to the largest; widths that are all equal give an ordinary uniform configuration.
    /// </summary>
    public ModelConfig WithLayerShapes(IReadOnlyList<LayerShape> layers)
    {
        if (layers.Count == 0) throw new ArgumentException("a model needs at least one block", nameof(layers));
        return this with
        {
            NumLayers = layers.Count,
            NumHeads = layers.Max(s => s.Heads),
            NumKvHeads = layers.Max(s => s.KvHeads),
            IntermediateSize = layers.Max(s => s.IntermediateSize),
            LayerShapes = layers.All(s => s == layers[0]) ? null : layers,
        };
    }

    /// <summary>Checks the numbers are consistent; <paramref name="source"/> names the file in the error.</summary>
    public void Validate(string source)
    {
        void Require(bool ok, string problem) { if (!ok) throw ShrinkException.InFile(source, problem); }
        Require(Architecture is "llama" or "mistral" or "qwen2" or "qwen3", $"unsupported architecture '{Architecture}' (supported: llama, mistral, qwen2, qwen3)");
        Require(HiddenSize > 0 && IntermediateSize > 0 && NumLayers > 0 && NumHeads > 0 && NumKvHeads > 0 && HeadDim > 0 && VocabSize > 0,
            "model dimensions must all be positive");
        Require(HiddenSize <= 1 << 16 && IntermediateSize <= 1 << 18 && NumLayers <= 1024 && NumHeads <= 1024 && HeadDim <= 1024 && VocabSize <= 1 << 22,
            "model dimensions are implausibly large");
        if (_layerShapes is null)
            Require(NumHeads % NumKvHeads == 0, $"{NumHeads} attention heads is not a multiple of {NumKvHeads} key/value heads");
        else
        {
            Require(_layerShapes.Count == NumLayers, $"{_layerShapes.Count} per-layer shapes for {NumLayers} layers");
            for (int i = 0; i < _layerShapes.Count; i++)
            {
                var s = _layerShapes[i];
                Require(s.Heads > 0 && s.KvHeads > 0 && s.IntermediateSize > 0, $"layer {i}: attention heads, key/value heads and intermediate size must all be positive");
                Require(s.Heads % s.KvHeads == 0, $"layer {i}: {s.Heads} attention heads is not a multiple of {s.KvHeads} key/value heads");
            }
            var widest = (_layerShapes.Max(s => s.Heads), _layerShapes.Max(s => s.KvHeads), _layerShapes.Max(s => s.IntermediateSize));
            Require((NumHeads, NumKvHeads, IntermediateSize) == widest,
                $"the model-wide widths ({NumHeads} heads, {NumKvHeads} key/value heads, intermediate size {IntermediateSize}) must be the largest of the per-layer ones {widest}");
        }
        Require(HeadDim % 2 == 0, $"head dimension {HeadDim} must be even for rotary embeddings");
        Require(RmsNormEps > 0 && float.IsFinite(RmsNormEps), "rms_norm_eps must be positive");
        Require(RopeTheta > 0 && float.IsFinite(RopeTheta), "rope_theta must be positive");
    }

    /// <summary>The per-block widths with value equality, so two configurations of the same shapes compare equal as records.</summary>
    private sealed class ShapeList(LayerShape[] shapes) : IReadOnlyList<LayerShape>, IEquatable<ShapeList>
    {
        private readonly LayerShape[] _shapes = shapes;
        public bool Uniform { get; } = shapes.All(s => s == shapes[0]);
        public int Count => _shapes.Length;
        public LayerShape this[int index] => _shapes[index];
        public IEnumerator<LayerShape> GetEnumerator() => ((IEnumerable<LayerShape>)_shapes).GetEnumerator();
        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
        public bool Equals(ShapeList? other) => other is not null && _shapes.AsSpan().SequenceEqual(other._shapes);
        public override bool Equals(object? obj) => Equals(obj as ShapeList);
        public override int GetHashCode() => _shapes.Aggregate(_shapes.Length, HashCode.Combine);
    }
}
