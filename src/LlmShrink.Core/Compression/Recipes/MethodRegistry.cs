using LlmShrink.Compression.Methods;

namespace LlmShrink.Compression.Recipes;

/// <summary>
/// Recipe method names → the classes that implement them, and whether each one's effect stays inside the layers it targets
/// (so the automatic planner may choose it per layer group). Adding a method adds one line here.
/// </summary>
public static class MethodRegistry
{
    private static readonly Dictionary<string, (Func<RecipeParameters, ICompressionMethod> Create, bool PerLayer)> Methods = new(StringComparer.Ordinal)
    {
        ["rtn"] = (RtnMethod.FromRecipe, true),
        ["gptq"] = (GptqMethod.FromRecipe, true),
        // AWQ and SmoothQuant fold their scales into the producer of the layers' input (a norm, up_proj, v_proj), which
        // another group owns; structured pruning changes the block's shape.
        ["awq"] = (AwqMethod.FromRecipe, false),
        ["smoothquant"] = (SmoothQuantMethod.FromRecipe, false),
        ["magnitude"] = (MagnitudeMethod.FromRecipe, true),
        ["wanda"] = (WandaMethod.FromRecipe, true),
        ["sparsegpt"] = (SparseGptMethod.FromRecipe, true),
        ["prune-heads"] = (HeadPruningMethod.FromRecipe, false),
        ["prune-ffn"] = (FfnPruningMethod.FromRecipe, false),
        ["drop-blocks"] = (DropBlocksMethod.FromRecipe, false),
        ["ggml"] = (GgmlTypeMethod.FromRecipe, true),
        ["svd"] = (LowRankMethod.FromRecipe(LowRankKind.Svd), true),
        ["asvd"] = (LowRankMethod.FromRecipe(LowRankKind.Asvd), true),
        ["svd-llm"] = (LowRankMethod.FromRecipe(LowRankKind.SvdLlm), true),
        // fwsvd's row weights are the Fisher information of the whole model's loss, from a survey before the first block.
        ["fwsvd"] = (LowRankMethod.FromRecipe(LowRankKind.Fwsvd), false),
        ["eora"] = (EoraMethod.FromRecipe, true),
        // Block-wise reconstruction tunes every targeted layer of a block together against the block's output.
        ["autoround"] = (AutoRoundMethod.FromRecipe, false),
    };

    public static IEnumerable<string> Names => Methods.Keys;

    /// <summary>The methods whose effect stays inside the layers they target: candidates the planner may give each layer group.</summary>
    public static IEnumerable<string> PerLayer => Methods.Where(m => m.Value.PerLayer).Select(m => m.Key);

    public static ICompressionMethod Create(string name, RecipeParameters parameters) =>
        Methods.TryGetValue(name, out var method) ? method.Create(parameters)
        : throw ShrinkException.InFile(parameters.Source, $"unknown method '{name}' (known: {string.Join(", ", Names)})");
}
