using LlmShrink.Compression.Recipes;

namespace LlmShrink.Planning;

/// <summary>
/// The candidates the planner may give each group, from <c>--candidates FILE</c> or the default menu. The file is the
/// YAML, read like a recipe, with one list:
/// <code>
/// candidates:
///   - keep                       # leave the layers as stored
///   - method: gptq               # any recipe method that decides per layer; a list value means "each of these"
///     bits: [2, 3, 4, 8]
///     group_size: [64, 128]
///     symmetric: [true, false]
///   - steps:                     # methods stacked on the group, in order (each step's lists expand too)
///       - method: sparsegpt
///         pattern: "2:4"
///       - method: gptq
///         bits: 4
/// </code>
/// Every combination of list values is one candidate, built and validated as a recipe modifier, so a new method is a
/// candidate as soon as it is a registered recipe method. Methods that change a block's shape (heads, channels, whole
/// blocks) or rescale a producer another group owns are not per-group decisions and are refused.
/// </summary>
public static class CandidateMenu
{
    /// <summary>Methods whose effect stays inside the group they target (<see cref="MethodRegistry.PerLayer"/>).</summary>
    private static readonly HashSet<string> PerGroup = new(MethodRegistry.PerLayer, StringComparer.Ordinal);

    /// <summary>
    /// Keep, and RTN and GPTQ at 2, 3, 4 and 8 bits in groups of 32, 64 and 128, symmetric and not: the weight-only
    /// schemes the GPTQ folder layout (and so vLLM and transformers) runs.
    /// </summary>
    public const string DefaultText = """
        candidates:
          - keep
          - method: rtn
            bits: [2, 3, 4, 8]
            group_size: [32, 64, 128]
            symmetric: [true, false]
          - method: gptq
            bits: [2, 3, 4, 8]
            group_size: [32, 64, 128]
            symmetric: [true, false]
        """;

    public static IReadOnlyList<Candidate> Default => Parse(DefaultText, "the default candidate menu");

    /// <summary>
    /// For <c>--format gguf</c>: the llama.cpp block types from 2.6 to 8.5 bits per weight that llama.cpp's own K-quant
    /// mixes are made of, each in two roundings: nearest with the layer's calibration importance (llama.cpp's imatrix),
    /// and GPTQ's error feedback on the same blocks (<see cref="Compression.Quantization.GgmlGptq"/>). Both cost the same
    /// bytes; the planner keeps whichever each tensor loses less with end to end.
    /// </summary>
    public const string DefaultGgufText = """
        candidates:
          - method: ggml
            type: [Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_0]
          - method: ggml
            type: [Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_0]
            rounding: gptq
        """;

    public static IReadOnlyList<Candidate> DefaultGguf => Parse(DefaultGgufText, "the default GGUF candidate menu");

    public static IReadOnlyList<Candidate> Load(string path)
    {
        return Parse(Formats.TextFile.ReadAll(path, "a YAML candidate menu"), path);
    }

    public static IReadOnlyList<Candidate> Parse(string yaml, string source)
    {
        var tree = RecipeYaml.Read(yaml, source);
        if (tree.Root is not Dictionary<string, object?> root || !root.TryGetValue("candidates", out var list))
            throw ShrinkException.InFile(tree.Where(tree.Root), "a candidate menu is a mapping with a 'candidates' list");
        if (root.Keys.FirstOrDefault(k => k != "candidates") is { } extra) throw ShrinkException.InFile(tree.Where(root), $"unknown top-level key '{extra}'");
        if (list is not List<object?> items || items.Count == 0) throw ShrinkException.InFile(tree.Where(root), "the candidate list is empty");

        var candidates = new List<Candidate>();
        foreach (var item in items)
        {
            if (item is "keep") { candidates.Add(Candidate.Keep); continue; }
            string where = tree.Where(item ?? list);
            if (item is not Dictionary<string, object?> entry) throw ShrinkException.InFile(where, "each candidate is 'keep', a mapping with 'method', or a mapping with 'steps'");
            var steps = entry.TryGetValue("steps", out var s)
                ? entry.Count == 1 && s is List<object?> { Count: > 0 } stepList ? stepList : throw ShrinkException.InFile(where, "'steps' must be a non-empty list and the candidate's only key")
                : [entry];
            foreach (var combination in Expand(steps, where))
            {
                var candidate = new Candidate(Candidate.NameOf(combination), combination);
                // Validated now, as a recipe is, so a bad value is an error naming the menu rather than a failure mid-plan.
                try { _ = candidate.Methods(); }
                catch (ShrinkException e) { throw ShrinkException.InFile(where, $"candidate '{candidate.Name}' is not a valid modifier: {e.Message}"); }
                if (candidate.Methods().Any(m => m.SurveysModel))
                    throw ShrinkException.InFile(where, $"candidate '{candidate.Name}' needs a survey of the whole model before the first block; the planner measures one layer group at a time");
                candidates.Add(candidate);
            }
        }
        var names = new HashSet<string>(StringComparer.Ordinal);
        return [.. candidates.Where(c => names.Add(c.Name))];
    }

    /// <summary>Every combination of each step's list values, steps kept in order.</summary>
    private static IEnumerable<IReadOnlyList<ModifierSpec>> Expand(List<object?> steps, string source)
    {
        IEnumerable<IReadOnlyList<ModifierSpec>> partial = [[]];
        foreach (var step in steps)
        {
            var variants = Variants(step, source).ToList();
            partial = partial.SelectMany(p => variants.Select(v => (IReadOnlyList<ModifierSpec>)[.. p, v])).ToList();
        }
        return partial;
    }

    private static IEnumerable<ModifierSpec> Variants(object? step, string source)
    {
        if (step is not Dictionary<string, object?> entry || !entry.TryGetValue("method", out var m) || m is not string method)
            throw ShrinkException.InFile(source, "each candidate step needs 'method: NAME'");
        if (!PerGroup.Contains(method))
            throw ShrinkException.InFile(source, MethodRegistry.Names.Contains(method)
                ? $"method '{method}' cannot be a per-layer candidate: it changes a block's shape, rescales layers of other groups, or needs a survey of the whole model (candidates: {string.Join(", ", PerGroup)})"
                : $"unknown method '{method}' (candidates: {string.Join(", ", PerGroup)})");
        if (entry.Keys.FirstOrDefault(k => k is "targets" or "ignore") is { } key)
            throw ShrinkException.InFile(source, $"candidate '{method}': '{key}' is chosen by the planner, not the menu");
        IEnumerable<ModifierSpec> specs = [new ModifierSpec(method, "Linear")];
        foreach (var (name, value) in entry.Where(kv => kv.Key != "method"))
        {
            var values = value switch
            {
                string one => [one],
                List<object?> many when many.Count > 0 && many.All(v => v is string) => many.Cast<string>().ToList(),
                _ => throw ShrinkException.InFile(source, $"candidate '{method}': '{name}' must be a value or a non-empty list of values"),
            };
            specs = specs.SelectMany(spec => values.Select(v => spec.With(name, v))).ToList();
        }
        return specs;
    }
}
