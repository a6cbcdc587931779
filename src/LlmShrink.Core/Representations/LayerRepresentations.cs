using LlmShrink.Formats;

namespace LlmShrink.Representations;

/// <summary>
/// The registered representations. Adding one adds its own file and one line here; loaders, exports and statistics find
/// a module's representation from its tensors, so a checkpoint may mix them layer by layer.
/// </summary>
public static class LayerRepresentations
{
    /// <summary>
    /// In detection order: the first whose tensors are present wins; a compensated module (factors beside another
    /// representation's tensors) comes first, dense (a plain float <c>.weight</c>) last.
    /// </summary>
    public static readonly IReadOnlyList<LayerRepresentation> All =
    [
        CompensatedRepresentation.Instance,
        GptqRepresentation.Instance,
        W8A8Representation.Instance,
        Sparse24Representation.Instance,
        GgmlTypeRepresentation.Instance,
        LowRankRepresentation.Instance,
        DenseRepresentation.Instance,
    ];

    /// <summary>The first registered compact form of a quantized layer (<see cref="LayerRepresentation.Compact"/>), else the layer itself.</summary>
    public static CompressedLayer Store(QuantizedLayer layer, bool[]? keep) =>
        All.Select(r => r.Compact(layer, keep)).FirstOrDefault(c => c is not null) ?? layer;

    /// <summary>Every tensor suffix any representation stores a weight under.</summary>
    public static IEnumerable<string> Suffixes => All.SelectMany(r => r.Suffixes).Distinct();

    /// <summary>The module's representation, or null when it has no weight tensors at all.</summary>
    public static LayerRepresentation? Find(TensorSet weights, string module) => All.FirstOrDefault(r => r.Detect(weights, module));

    /// <summary>The module's representation; a module without weights is a one-line error naming <paramref name="source"/>.</summary>
    public static LayerRepresentation Of(TensorSet weights, string module, string source) =>
        Find(weights, module) ?? throw ShrinkException.InFile(source, $"missing tensor '{module}.weight'");
}
