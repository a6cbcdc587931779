using System.Globalization;
using System.Text;

namespace LlmShrink.Compression.Recipes;

/// <summary>
/// One modifier as a recipe states it — method, targets, ignore list and the other parameters as their YAML text —
/// for building recipes in code (the automatic planner) as well as reading them: <see cref="Recipe.From"/> writes specs
/// as YAML and parses that, so a built recipe is validated exactly like a file and saves as one.
/// </summary>
public sealed record ModifierSpec(string Method, IReadOnlyList<string> Targets, IReadOnlyList<string> Ignore, IReadOnlyDictionary<string, string> Parameters)
{
    public ModifierSpec(string method, params string[] targets) : this(method, targets.Length == 0 ? ["Linear"] : targets, [], new Dictionary<string, string>()) { }

    /// <summary>A copy with <paramref name="key"/> set (numbers in invariant culture, booleans as true/false).</summary>
    public ModifierSpec With(string key, object value)
    {
        if (key is "method" or "targets" or "ignore") throw new ArgumentException($"'{key}' is not a parameter; use the record's own field", nameof(key));
        string text = value switch
        {
            bool b => b ? "true" : "false",
            IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
            _ => value.ToString() ?? throw new ArgumentNullException(nameof(value)),
        };
        return this with { Parameters = new Dictionary<string, string>(Parameters) { [key] = text } };
    }

    /// <summary>A copy that also leaves out <paramref name="patterns"/>.</summary>
    public ModifierSpec Ignoring(params string[] patterns) => this with { Ignore = [.. Ignore, .. patterns] };

    /// <summary>The modifier as one item of a recipe's <c>modifiers:</c> list.</summary>
    internal void WriteYaml(StringBuilder s)
    {
        s.Append("  - method: ").Append(Quote(Method)).Append('\n');
        s.Append("    targets: [").Append(string.Join(", ", Targets.Select(Quote))).Append("]\n");
        if (Ignore.Count > 0) s.Append("    ignore: [").Append(string.Join(", ", Ignore.Select(Quote))).Append("]\n");
        foreach (var (key, value) in Parameters) s.Append("    ").Append(key).Append(": ").Append(Quote(value)).Append('\n');
    }

    /// <summary>Single-quoted YAML: backslashes (in regex targets) stay literal, a quote is doubled (YAML 1.1 §7.3.2). Line breaks
    /// would fold into spaces, so a value may not hold one.</summary>
    private static string Quote(string value) =>
        value.IndexOfAny(['\n', '\r']) < 0 ? $"'{value.Replace("'", "''")}'"
        : throw new ArgumentException($"a recipe value cannot hold a line break: {value}");
}
