using System.Text.Json.Nodes;

namespace LlmShrink.Export;

/// <summary>
/// How one quantized module is described to compressed-tensors (neuralmagic/compressed-tensors, the layout llm-compressor
/// writes and vLLM and transformers load): its weight arguments and, for W8A8, its input activations. Modules with equal
/// schemes share one entry of <c>config_groups</c>, whose <c>targets</c> name them. See docs/FORMAT.md, "Export:
/// compressed-tensors".
/// </summary>
/// <param name="Bits">Weight bits (<c>num_bits</c>).</param>
/// <param name="GroupSize">Input columns per scale, or −1 for one scale per output channel (<c>strategy: channel</c>).</param>
/// <param name="Symmetric">No zero point: the weight is scale · q with q signed.</param>
/// <param name="ActOrder">Groups assigned by activation order, stated per column in <c>weight_g_idx</c> (<c>actorder: group</c>).</param>
/// <param name="Int8Activations">W8A8: inputs quantized to int8 per token at run time (<c>input_activations</c> dynamic, strategy token).</param>
public sealed record CompressedTensorsScheme(int Bits, int GroupSize, bool Symmetric, bool ActOrder, bool Int8Activations)
{
    /// <summary>W8A8 as LlmShrink stores it: int8 weights with one scale per output channel, symmetric; int8 activations per token.</summary>
    public static readonly CompressedTensorsScheme W8A8 = new(8, GroupSize: -1, Symmetric: true, ActOrder: false, Int8Activations: true);

    /// <summary>compressed-tensors' release whose layout this export follows (quantization_config's <c>version</c>; loaders ignore it).</summary>
    public const string LibraryVersion = "0.18.0";

    /// <summary>
    /// The compressor that reads the module: int8 weights with int8 activations are stored unpacked (<c>int-quantized</c>, an I8
    /// <c>weight</c>); weight-only modules pack their values into int32 words (<c>pack-quantized</c>).
    /// </summary>
    public string Format => Int8Activations ? "int-quantized" : "pack-quantized";

    /// <summary>The config group: QuantizationScheme's fields as the library dumps them (targets, weights, input/output activations, format).</summary>
    public JsonObject ToJson(IEnumerable<string> targets) => new()
    {
        ["targets"] = new JsonArray([.. targets.Select(t => (JsonNode)t)]),
        ["weights"] = Arguments(Bits, Symmetric, GroupSize > 0 ? GroupSize : null, GroupSize > 0 ? "group" : "channel",
            dynamic: false, actOrder: ActOrder ? "group" : null, observer: "minmax"),
        // Dynamic per-token int8, symmetric: what vLLM's dynamic-token W8A8 kernel computes and LlmShrink's W8A8Linear does.
        ["input_activations"] = Int8Activations ? Arguments(8, symmetric: true, groupSize: null, "token", dynamic: true, actOrder: null, observer: null) : null,
        ["output_activations"] = null,
        ["format"] = Format,
    };

    /// <summary>
    /// QuantizationArgs in the library's field order. The model forbids unknown fields, so this writes the ones every
    /// release since 0.9 knows and leaves out <c>scale_dtype</c>/<c>zp_dtype</c> (added in 0.13; their defaults, the
    /// weight's dtype and int8, are what the tensors hold) — older releases would refuse them.
    /// </summary>
    private static JsonObject Arguments(int bits, bool symmetric, int? groupSize, string strategy, bool dynamic, string? actOrder, string? observer) => new()
    {
        ["num_bits"] = bits,
        ["type"] = "int",
        ["symmetric"] = symmetric,
        ["group_size"] = groupSize,
        ["strategy"] = strategy,
        ["block_structure"] = null,
        ["dynamic"] = dynamic,
        ["actorder"] = actOrder,
        ["observer"] = observer,
        ["observer_kwargs"] = new JsonObject(),
    };

    /// <summary>
    /// config.json's <c>quantization_config</c>: one <c>group_k</c> per distinct scheme, in the order modules first use it,
    /// targeting its modules by full name; <c>format</c> the groups' common format, or <c>mixed-precision</c> when they
    /// differ (each group then states its own, which is what vLLM and the library read); <c>ignore</c> the linear modules
    /// left in float. Key for key as the library's ModelCompressor.update_config writes it.
    /// </summary>
    public static JsonObject QuantizationConfig(IReadOnlyList<(string Module, CompressedTensorsScheme Scheme)> quantized, IReadOnlyList<string> ignore)
    {
        var groups = new JsonObject();
        var schemes = quantized.GroupBy(q => q.Scheme).ToList();
        for (int g = 0; g < schemes.Count; g++)
            groups[$"group_{g}"] = schemes[g].Key.ToJson(schemes[g].Select(q => q.Module));
        var formats = schemes.Select(s => s.Key.Format).Distinct().ToList();
        return new JsonObject
        {
            ["version"] = LibraryVersion,
            ["quant_method"] = "compressed-tensors",
            ["sparsity_config"] = new JsonObject(),
            ["transform_config"] = new JsonObject(),
            ["config_groups"] = groups,
            ["kv_cache_scheme"] = null,
            ["format"] = formats.Count == 1 ? formats[0] : "mixed-precision",
            ["quantization_status"] = "compressed",
            ["global_compression_ratio"] = null,
            ["ignore"] = new JsonArray([.. ignore.Select(m => (JsonNode)m)]),
        };
    }
}
