using System.Globalization;

namespace LlmShrink.Compression.Recipes;

/// <summary>
/// A modifier's parameters from a recipe, read with typed getters. Every key must be read by the method: an
/// unknown or misspelled key is an error naming the recipe, so a typo never silently falls back to a default.
/// </summary>
public sealed class RecipeParameters
{
    private readonly Dictionary<string, object?> _values;
    private readonly HashSet<string> _read = new(StringComparer.Ordinal);

    /// <summary>Where the modifier is: the recipe file, and its line and column when it came from one.</summary>
    public string Source { get; }
    public string Modifier { get; }

    public RecipeParameters(Dictionary<string, object?> values, string source, string modifier)
    {
        _values = values;
        Source = source;
        Modifier = modifier;
    }

    public int Int(string key, int fallback, params int[] allowed)
    {
        if (!TryScalar(key, out var text)) return fallback;
        if (!int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int value)) throw Bad(key, $"'{text}' is not an integer");
        if (allowed.Length > 0 && !allowed.Contains(value)) throw Bad(key, $"{value} is not one of {string.Join(", ", allowed)}");
        return value;
    }

    public double Double(string key, double fallback, double min, double max)
    {
        if (!TryScalar(key, out var text)) return fallback;
        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value)) throw Bad(key, $"'{text}' is not a number");
        if (!(value >= min && value <= max)) throw Bad(key, $"{value} is outside [{min}, {max}]");
        return value;
    }

    public bool Bool(string key, bool fallback)
    {
        if (!TryScalar(key, out var text)) return fallback;
        return text switch
        {
            "true" or "True" or "yes" => true,
            "false" or "False" or "no" => false,
            _ => throw Bad(key, $"'{text}' is not true or false"),
        };
    }

    public string String(string key, string fallback, params string[] allowed)
    {
        if (!TryScalar(key, out var text)) return fallback;
        if (allowed.Length > 0 && !allowed.Contains(text)) throw Bad(key, $"'{text}' is not one of {string.Join(", ", allowed)}");
        return text;
    }

    public IReadOnlyList<string> List(string key, IReadOnlyList<string> fallback)
    {
        _read.Add(key);
        if (!_values.TryGetValue(key, out var value) || value is null) return fallback;
        return value switch
        {
            string single => [single],
            List<object?> items when items.All(i => i is string) => items.Cast<string>().ToList(),
            _ => throw Bad(key, "expected a list of strings"),
        };
    }

    /// <summary>Whether the recipe sets <paramref name="key"/> (it still has to be read by a getter).</summary>
    public bool Has(string key) => _values.TryGetValue(key, out var value) && value is not null;

    /// <summary>Fails on any key no getter asked for.</summary>
    public void RejectUnknown()
    {
        var unknown = _values.Keys.Where(k => !_read.Contains(k)).ToList();
        if (unknown.Count > 0) throw ShrinkException.InFile(Source, $"modifier '{Modifier}': unknown parameter '{unknown[0]}'");
    }

    private bool TryScalar(string key, out string text)
    {
        _read.Add(key);
        text = "";
        if (!_values.TryGetValue(key, out var value) || value is null) return false;
        text = value as string ?? throw Bad(key, "expected a single value");
        return true;
    }

    private ShrinkException Bad(string key, string problem) => ShrinkException.InFile(Source, $"modifier '{Modifier}': {key}: {problem}");
}
