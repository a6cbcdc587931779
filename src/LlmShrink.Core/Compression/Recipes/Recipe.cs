namespace LlmShrink.Compression.Recipes;

/// <summary>One step of a recipe: a method and the layers it applies to.</summary>
public sealed record Modifier(ICompressionMethod Method, TargetSelector Targets);

/// <summary>
/// An ordered list of modifiers, read from a YAML file or a named preset:
/// <code>
/// modifiers:
///   - method: gptq
///     targets: [Linear]      # "Linear" (the block linears), a module name like "down_proj" or "lm_head", or "re:REGEX" on the module path
///     ignore: [re:.*\.0\.]   # optional
///     bits: 4
///     group_size: 128
/// </code>
/// Each linear may be targeted by at most one modifier. lm_head is kept unless a modifier names it (see
/// <see cref="TargetSelector"/>); token embeddings are always kept.
/// </summary>
public sealed class Recipe
{
    public string Name { get; }
    /// <summary>The recipe's YAML, saved beside the compressed checkpoint.</summary>
    public string Text { get; }
    public IReadOnlyList<Modifier> Modifiers { get; }

    private Recipe(string name, string text, IReadOnlyList<Modifier> modifiers)
    {
        Name = name;
        Text = text;
        Modifiers = modifiers;
    }

    /// <summary>A preset name (see <see cref="RecipePresets"/>) or the path of a YAML recipe file.</summary>
    public static Recipe Load(string presetOrPath)
    {
        if (RecipePresets.TryGet(presetOrPath, out var preset)) return Parse(preset, presetOrPath, presetOrPath);
        if (!File.Exists(presetOrPath))
            throw new ShrinkException($"{presetOrPath}: not a recipe file nor a preset (presets: {string.Join(", ", RecipePresets.Names)})");
        return Parse(File.ReadAllText(presetOrPath), Path.GetFileNameWithoutExtension(presetOrPath), presetOrPath);
    }

    public static Recipe Parse(string yaml, string name, string source)
    {
        if (RecipeYaml.Parse(yaml, source) is not Dictionary<string, object?> root || !root.TryGetValue("modifiers", out var list))
            throw ShrinkException.InFile(source, "a recipe is a mapping with a 'modifiers' list");
        if (root.Keys.FirstOrDefault(k => k != "modifiers") is { } extra) throw ShrinkException.InFile(source, $"unknown top-level key '{extra}'");
        if (list is not List<object?> items || items.Count == 0) throw ShrinkException.InFile(source, "'modifiers' must be a non-empty list");

        var modifiers = new List<Modifier>();
        foreach (var item in items)
        {
            if (item is not Dictionary<string, object?> entry || !entry.TryGetValue("method", out var m) || m is not string method)
                throw ShrinkException.InFile(source, "each modifier needs 'method: NAME'");
            var parameters = new Dictionary<string, object?>(entry.Where(kv => kv.Key != "method"));
            var p = new RecipeParameters(parameters, source, method);
            var targets = new TargetSelector(p.List("targets", ["Linear"]), p.List("ignore", []), source);
            var created = MethodRegistry.Create(method, p);
            p.RejectUnknown();
            modifiers.Add(new Modifier(created, targets));
        }
        return new Recipe(name, yaml, modifiers);
    }
}
