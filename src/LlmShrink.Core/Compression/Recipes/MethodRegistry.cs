using LlmShrink.Compression.Methods;

namespace LlmShrink.Compression.Recipes;

/// <summary>Recipe method names → the classes that implement them. Adding a method adds one line here.</summary>
public static class MethodRegistry
{
    private static readonly Dictionary<string, Func<RecipeParameters, ICompressionMethod>> Factories = new(StringComparer.Ordinal)
    {
        ["rtn"] = RtnMethod.FromRecipe,
        ["gptq"] = GptqMethod.FromRecipe,
        ["awq"] = AwqMethod.FromRecipe,
        ["smoothquant"] = SmoothQuantMethod.FromRecipe,
        ["magnitude"] = MagnitudeMethod.FromRecipe,
        ["wanda"] = WandaMethod.FromRecipe,
        ["sparsegpt"] = SparseGptMethod.FromRecipe,
        ["prune-heads"] = HeadPruningMethod.FromRecipe,
        ["prune-ffn"] = FfnPruningMethod.FromRecipe,
        ["drop-blocks"] = DropBlocksMethod.FromRecipe,
        ["ggml"] = GgmlTypeMethod.FromRecipe,
    };

    public static IEnumerable<string> Names => Factories.Keys;

    public static ICompressionMethod Create(string name, RecipeParameters parameters) =>
        Factories.TryGetValue(name, out var factory) ? factory(parameters)
        : throw ShrinkException.InFile(parameters.Source, $"unknown method '{name}' (known: {string.Join(", ", Names)})");
}
