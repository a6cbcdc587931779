using LlmShrink.Formats;
using LlmShrink.Model;
using LlmShrink.Representations;

namespace LlmShrink.Evaluation;

/// <summary>Parameters and stored bytes of one kind of tensor (e.g. every layer's q_proj).</summary>
public sealed record TensorGroup(string Name, long Parameters, long Bytes);

/// <summary>
/// Size and cost of a loaded model: parameters per tensor group, storage, and the work one token takes —
/// the numbers that say what a compression saved and what speed to expect.
/// </summary>
public sealed class ModelStatistics
{
    /// <summary>Groups in display order.</summary>
    public static readonly string[] GroupNames =
        ["embedding", "attention.q", "attention.k", "attention.v", "attention.o", "mlp.gate", "mlp.up", "mlp.down", "norms", "lm_head", "other"];

    private static readonly HashSet<string> MatmulGroups =
        ["attention.q", "attention.k", "attention.v", "attention.o", "mlp.gate", "mlp.up", "mlp.down", "lm_head"];

    public required IReadOnlyList<TensorGroup> Groups { get; init; }
    /// <summary>Parameters and tensor count per storage type, e.g. F32 → (params, tensors).</summary>
    public required IReadOnlyDictionary<TensorType, (long Parameters, int Tensors)> Types { get; init; }
    public required long Parameters { get; init; }
    /// <summary>Bytes of tensor data (each stored tensor once).</summary>
    public required long TensorBytes { get; init; }
    /// <summary>Weights a generated token multiplies with: every linear layer plus the output projection (the embedding when tied).</summary>
    public required long MatmulParameters { get; init; }
    /// <summary>Stored bytes of those weights: what decoding one token must stream from memory.</summary>
    public required long MatmulBytes { get; init; }
    public required ModelConfig Config { get; init; }

    /// <summary>Average storage bits per parameter, block scales included.</summary>
    public double BitsPerWeight => Parameters == 0 ? 0 : 8.0 * TensorBytes / Parameters;

    /// <summary>
    /// Floating-point operations to process one token with <paramref name="context"/> tokens of attention context:
    ///   2 · MatmulParameters                           every weight of a linear layer is one multiply-add;
    /// + 2 · 2 · context · Σ_layers (heads_l · headDim)   per layer, q·k scores against every past position and the
    ///                                                    score-weighted sum of values, each one multiply-add per element.
    /// Norms, RoPE, softmax and activations are lower-order and left out (as in Kaplan et al., 2020, §2.1).
    /// </summary>
    public double FlopsPerToken(int context) =>
        2.0 * MatmulParameters + 2.0 * 2.0 * (double)context * Enumerable.Range(0, Config.NumLayers).Sum(l => (double)Config.QDimOf(l));

    public static ModelStatistics Of(LoadedModel model) => Of(model.Config, model.Weights);

    public static ModelStatistics Of(ModelConfig config, TensorSet weights)
    {
        var parameters = GroupNames.ToDictionary(g => g, _ => 0L);
        var bytes = GroupNames.ToDictionary(g => g, _ => 0L);
        var types = new Dictionary<TensorType, (long, int)>();
        // Each stored tensor is counted once, under the first canonical name that reaches it: a loader may register a
        // tensor under its native name too, and a tied lm_head may point at the embedding's bytes.
        var seen = new HashSet<(string File, long Offset)>();
        bool Count(StoredTensor tensor, string group, long? parameterCount = null)
        {
            if (!seen.Add((tensor.File.Path, tensor.Offset))) return false;
            parameters[group] += parameterCount ?? tensor.ElementCount;
            bytes[group] += tensor.ByteLength;
            var (p, n) = types.GetValueOrDefault(tensor.Type);
            types[tensor.Type] = (p + tensor.ElementCount, n + 1);
            return true;
        }

        long matmulParameters = 0, matmulBytes = 0;
        foreach (var (name, group) in CanonicalNames(config))
        {
            if (weights.Find(name) is not { } tensor) continue;
            Count(tensor, group);
        }
        // A linear layer (lm_head included) may be stored in any registered representation (dense .weight, GPTQ .qweight/…,
        // W8A8 .weight/.weight_scale, …): its parameters are out × in whatever the layout (the values of the factors when it is
        // low-rank), its bytes all of its tensors.
        foreach (var (module, group, outFeatures, inFeatures) in LinearModules(config))
        {
            long layerParameters = LayerRepresentations.Find(weights, module)?.Parameters(weights, module) ?? (long)outFeatures * inFeatures;
            bool first = true;
            foreach (string suffix in LinearSuffixes)
            {
                if (weights.Find(module + suffix) is not { } tensor) continue;
                long before = bytes[group];
                if (!Count(tensor, group, first ? layerParameters : 0)) continue;
                first = false;
                matmulBytes += bytes[group] - before;
            }
            if (!first) matmulParameters += layerParameters;
        }
        if (LayerRepresentations.Find(weights, TensorNames.LmHeadModule) is null && weights.Find(TensorNames.Embedding) is { } embedding)
        {
            // Tied: the output projection multiplies by the embedding matrix.
            matmulParameters += embedding.ElementCount;
            matmulBytes += embedding.ByteLength;
        }
        foreach (var tensor in weights.All.OrderBy(t => t.Name, StringComparer.Ordinal)) Count(tensor, "other");

        return new ModelStatistics
        {
            Config = config,
            Groups = GroupNames.Select(g => new TensorGroup(g, parameters[g], bytes[g])).ToArray(),
            Types = types,
            Parameters = parameters.Values.Sum(),
            TensorBytes = bytes.Values.Sum(),
            MatmulParameters = matmulParameters,
            MatmulBytes = matmulBytes,
        };
    }

    /// <summary>Every canonical tensor name a model of this shape may have, with its group.</summary>
    private static IEnumerable<(string Name, string Group)> CanonicalNames(ModelConfig config)
    {
        yield return (TensorNames.Embedding, "embedding");
        for (int i = 0; i < config.NumLayers; i++)
        {
            foreach (var (suffix, group) in LayerTensors) yield return (TensorNames.Layer(i, suffix), group);
        }
        yield return (TensorNames.FinalNorm, "norms");
    }

    private static readonly (string Suffix, string Group)[] LayerTensors =
    [
        (TensorNames.QBias, "attention.q"), (TensorNames.KBias, "attention.k"), (TensorNames.VBias, "attention.v"),
        (TensorNames.AttnNorm, "norms"), (TensorNames.FfnNorm, "norms"), (TensorNames.QNorm, "norms"), (TensorNames.KNorm, "norms"),
    ];

    private static readonly string[] LinearSuffixes = LayerRepresentations.Suffixes.ToArray();

    /// <summary>Every block linear layer and lm_head: module path (without ".weight"), group, out and in features.</summary>
    private static IEnumerable<(string Module, string Group, int Out, int In)> LinearModules(ModelConfig c)
    {
        for (int i = 0; i < c.NumLayers; i++)
        {
            string M(string suffix) => TensorNames.Layer(i, suffix)[..^".weight".Length];
            int q = c.QDimOf(i), kv = c.KvDimOf(i), ffn = c.Layer(i).IntermediateSize;
            yield return (M(TensorNames.Q), "attention.q", q, c.HiddenSize);
            yield return (M(TensorNames.K), "attention.k", kv, c.HiddenSize);
            yield return (M(TensorNames.V), "attention.v", kv, c.HiddenSize);
            yield return (M(TensorNames.O), "attention.o", c.HiddenSize, q);
            yield return (M(TensorNames.Gate), "mlp.gate", ffn, c.HiddenSize);
            yield return (M(TensorNames.Up), "mlp.up", ffn, c.HiddenSize);
            yield return (M(TensorNames.Down), "mlp.down", c.HiddenSize, ffn);
        }
        yield return (TensorNames.LmHeadModule, "lm_head", c.VocabSize, c.HiddenSize);
    }
}
