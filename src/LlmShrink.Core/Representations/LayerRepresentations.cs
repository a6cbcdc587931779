using LlmShrink.Formats;

namespace LlmShrink.Representations;

/// <summary>
/// The registered representations. Adding one adds its own file and one line here; loaders, exports and statistics find
/// a module's representation from its tensors, so a checkpoint may mix them layer by layer.
/// </summary>
public static class LayerRepresentations
{
    /// <summary>
    /// In detection order: the first whose tensors are present wins. A compensated module (factors beside another
    /// representation's tensors) comes first; low-rank next: its factors are modules of their own in any other
    /// representation, so their tensor names end in the others' suffixes (<c>q_proj.lowrank_v.qweight</c>) and must be
    /// claimed by the whole layer, not by the factor; dense (a plain float <c>.weight</c>) last.
    /// </summary>
    public static readonly IReadOnlyList<LayerRepresentation> All =
    [
        CompensatedRepresentation.Instance,
        LowRankRepresentation.Instance,
        GptqRepresentation.Instance,
        W8A8Representation.Instance,
        Sparse24Representation.Instance,
        GgmlTypeRepresentation.Instance,
        DenseRepresentation.Instance,
    ];

    /// <summary>The first registered compact form of a quantized layer (<see cref="LayerRepresentation.Compact"/>), else the layer itself.</summary>
    public static CompressedLayer Store(QuantizedLayer layer, bool[]? keep) =>
        All.Select(r => r.Compact(layer, keep)).FirstOrDefault(c => c is not null) ?? layer;

    /// <summary>Every tensor suffix any representation stores a weight under.</summary>
    public static IEnumerable<string> Suffixes => All.SelectMany(r => r.Suffixes).Distinct();

    /// <summary>
    /// The module's weight [out, in] as the model computes it, in float32, whatever its representation: the plain tensor
    /// decoded, integers times scales, ggml blocks decoded, or factors multiplied.
    /// </summary>
    public static float[] Dequantize(TensorSet weights, string module, string source) => Dequantize(Of(weights, module, source), weights, module, source);

    /// <summary>As <see cref="Dequantize(TensorSet, string, string)"/>, read as <paramref name="representation"/> (e.g. a compensated module's base).</summary>
    public static float[] Dequantize(LayerRepresentation representation, TensorSet weights, string module, string source)
    {
        if (representation.IsDense) return weights.Get(module + ".weight").ToFloatArray();
        if (representation.Integers(weights, module) is { } integers) return integers.Dequantize();
        if (representation.StoredBlocks(weights, module) is { } blocks) return blocks.ToFloatArray();
        return representation.Multiplied(weights, module)?.Invoke()
            ?? throw ShrinkException.InFile(source, $"module '{module}' ({representation.Name}) has no float form");
    }

    /// <summary>The module's representation, or null when it has no weight tensors at all.</summary>
    public static LayerRepresentation? Find(TensorSet weights, string module) => All.FirstOrDefault(r => r.Detect(weights, module));

    /// <summary>The module's representation; a module without weights is a one-line error naming <paramref name="source"/>.</summary>
    public static LayerRepresentation Of(TensorSet weights, string module, string source) =>
        Find(weights, module) ?? throw ShrinkException.InFile(source, $"missing tensor '{module}.weight'");
}
