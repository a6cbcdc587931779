using LlmShrink.Compression;
using LlmShrink.Compression.Recipes;

namespace LlmShrink.Planning;

/// <summary>
/// One way to compress a group of layers: the recipe modifiers that would be applied to it, in order (a stack such as
/// sparsegpt then gptq is one candidate), with their targets left open — the planner points them at a group when it
/// tries the candidate and when it writes the plan. "keep" has no steps: the layers stay as stored.
/// </summary>
public sealed record Candidate(string Name, IReadOnlyList<ModifierSpec> Steps)
{
    public static readonly Candidate Keep = new("keep", []);

    public bool IsKeep => Steps.Count == 0;

    /// <summary>The steps aimed at <paramref name="group"/>, as recipe modifiers.</summary>
    public IEnumerable<ModifierSpec> For(LayerGroup group) => Steps.Select(s => s with { Targets = [group.Target], Ignore = [] });

    /// <summary>The steps' methods, built and validated the way a recipe file's are.</summary>
    public IReadOnlyList<ICompressionMethod> Methods() =>
        IsKeep ? [] : [.. Recipe.From(Name, Steps).Modifiers.Select(m => m.Method)];

    /// <summary>What the methods read about the layers' inputs.</summary>
    public StatisticsNeeds Needs => Methods().Aggregate(StatisticsNeeds.None, (n, m) => n | m.Needs);

    /// <summary>"gptq bits=4 group_size=128 symmetric=false", stacks joined by " → ".</summary>
    public static string NameOf(IEnumerable<ModifierSpec> steps) =>
        string.Join(" → ", steps.Select(s => string.Join(" ", s.Parameters.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key}={kv.Value}").Prepend(s.Method))));
}
