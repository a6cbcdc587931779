using System.Diagnostics.CodeAnalysis;

namespace LlmShrink.Compression.Recipes;

/// <summary>Named recipes for the common schemes (wNgG = N-bit weights in groups of G input columns; "-head": lm_head too).</summary>
public static class RecipePresets
{
    private static string WeightOnly(string method, int bits, int group) => $"""
        modifiers:
          - method: {method}
            targets: [Linear]
            ignore: [lm_head]
            bits: {bits}
            group_size: {group}
            symmetric: true
        """;

    /// <summary>Block linears pruned (lm_head kept): <paramref name="pattern"/> "unstructured" with <paramref name="sparsity"/>, or N:M.</summary>
    private static string Pruned(string method, string pattern, string extra = "", double sparsity = 0.5) => $"""
        modifiers:
          - method: {method}
            targets: [Linear]
            ignore: [lm_head]
            pattern: "{pattern}"{(pattern == "unstructured" ? $"\n    sparsity: {sparsity.ToString(System.Globalization.CultureInfo.InvariantCulture)}" : "")}{extra}
        """;

    private static string Structured(string method, double fraction) => $"""
        modifiers:
          - method: {method}
            targets: [Linear]
            fraction: {fraction.ToString(System.Globalization.CultureInfo.InvariantCulture)}
        """;

    /// <summary>Block linears factored (lm_head kept) so that each stores at most (1 − ratio) of its values.</summary>
    private static string LowRank(string method, double ratio, string extra = "") => $"""
        modifiers:
          - method: {method}
            targets: [Linear]
            ignore: [lm_head]
            ratio: {ratio.ToString(System.Globalization.CultureInfo.InvariantCulture)}{extra}
        """;

    /// <summary><paramref name="quantized"/>, then an <c>eora</c> modifier of <paramref name="rank"/> on the same layers (block linears, lm_head kept).</summary>
    private static string Compensated(string quantized, int rank) => $"""
        {quantized}
          - method: eora
            targets: [Linear]
            ignore: [lm_head]
            rank: {rank}
        """;

    private static readonly Dictionary<string, string> Presets = new(StringComparer.Ordinal)
    {
        ["w8-rtn"] = $"""
            modifiers:
              - method: rtn
                targets: [Linear]
                ignore: [lm_head]
                bits: 8
                granularity: channel
                symmetric: true
            """,
        ["w4g128-rtn"] = WeightOnly("rtn", 4, 128),
        // Every matmul 4-bit: the block linears and lm_head (untied when the source ties it to the embeddings, which stay as stored).
        ["w4g128-rtn-head"] = """
            modifiers:
              - method: rtn
                targets: [Linear, lm_head]
                bits: 4
                group_size: 128
                symmetric: true
            """,
        ["w3g128-rtn"] = WeightOnly("rtn", 3, 128),
        ["w4g128-gptq"] = WeightOnly("gptq", 4, 128),
        ["w3g128-gptq"] = WeightOnly("gptq", 3, 128),
        ["w2g64-gptq"] = WeightOnly("gptq", 2, 64),
        // AutoRound: the same schemes as the GPTQ presets, each block's roundings and clipping tuned against its output.
        ["w3g128-autoround"] = WeightOnly("autoround", 3, 128),
        ["w2g64-autoround"] = WeightOnly("autoround", 2, 64),
        // llm-awq's default: 4-bit, groups of 128, with zero points (asymmetric).
        ["w4g128-awq"] = """
            modifiers:
              - method: awq
                targets: [Linear]
                ignore: [lm_head]
                bits: 4
                group_size: 128
                symmetric: false
            """,
        ["w8a8-smoothquant"] = """
            modifiers:
              - method: smoothquant
                targets: [Linear]
                ignore: [lm_head]
                alpha: 0.5
            """,
        // llm-compressor's W8A8 recipe: SmoothQuant folds the activation scales, then GPTQ picks the int8 weights
        // (symmetric, per output channel) instead of rounding them to nearest.
        ["w8a8-smoothquant-gptq"] = """
            modifiers:
              - method: smoothquant
                targets: [Linear]
                ignore: [lm_head]
                alpha: 0.5
              - method: gptq
                targets: [Linear]
                ignore: [lm_head]
                bits: 8
                granularity: channel
                symmetric: true
                activations: int8
            """,
        // Pruning: half of every block linear's weights (unstructured per row, or 2 of every 4 inputs for sparse kernels).
        ["magnitude-50"] = Pruned("magnitude", "unstructured"),
        ["wanda-50"] = Pruned("wanda", "unstructured"),
        ["sparsegpt-50"] = Pruned("sparsegpt", "unstructured"),
        ["wanda-2of4"] = Pruned("wanda", "2:4"),
        ["sparsegpt-2of4"] = Pruned("sparsegpt", "2:4"),
        // OWL (Yin et al. 2023): 70 % of the block linears' weights on average, each block between 62 % and 78 %, fewer
        // where the float model's Wanda scores have more outliers; the paper's gains over uniform show at such sparsities
        // (on LLaMA; on tinylit-8m OWL loses to uniform, docs/BENCHMARKS.md).
        ["wanda-owl-70"] = Pruned("wanda", "unstructured", "\n    allocation: owl", sparsity: 0.7),
        ["sparsegpt-owl-70"] = Pruned("sparsegpt", "unstructured", "\n    allocation: owl", sparsity: 0.7),
        // SparseGPT's joint pass: the 2:4 mask and 4-bit g128 codes chosen together (pruned weights at the zero code).
        ["sparsegpt-2of4-w4g128"] = Pruned("sparsegpt", "2:4", "\n    bits: 4\n    group_size: 128\n    symmetric: true"),
        // Structured: tensors shrink. A quarter of the blocks by ShortGPT's Block Influence, a fifth of every MLP's
        // channels, a quarter of every block's key/value head groups (with their query heads).
        ["drop-blocks-25"] = Structured("drop-blocks", 0.25),
        ["ffn-20"] = Structured("prune-ffn", 0.2),
        ["heads-25"] = Structured("prune-heads", 0.25),
        // Low-rank: a fifth (or two fifths) of every block linear's parameters removed by truncating its SVD — of W itself,
        // of W·diag(mean|x|)^½ (ASVD), of W·chol(XXᵀ) (SVD-LLM's whitening), or of diag(√Fisher)·W (FWSVD). V2: the
        // same two fifths of each layer type, spread over the depths by whitened truncation loss (SVD-LLM V2).
        ["svd-20"] = LowRank("svd", 0.2),
        ["fwsvd-20"] = LowRank("fwsvd", 0.2),
        ["asvd-20"] = LowRank("asvd", 0.2),
        ["svd-llm-20"] = LowRank("svd-llm", 0.2),
        ["svd-llm-40"] = LowRank("svd-llm", 0.4),
        ["svd-llm-v2-40"] = LowRank("svd-llm", 0.4, "\n    allocation: loss"),
        // 3-bit GPTQ, then EoRA: a rank-32 correction of each layer's quantization error in the inputs' eigenspace.
        ["w3g128-gptq-eora32"] = Compensated(WeightOnly("gptq", 3, 128), 32),
    };

    public static IEnumerable<string> Names => Presets.Keys;

    public static bool TryGet(string name, [NotNullWhen(true)] out string? yaml) => Presets.TryGetValue(name, out yaml);
}
