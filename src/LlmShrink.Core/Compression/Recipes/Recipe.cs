using LlmShrink.Model;
namespace LlmShrink.Compression.Recipes;

/// <summary>One step of a recipe: a method, the layers it applies to, and the spec it was made from.</summary>
public sealed record Modifier(ICompressionMethod Method, TargetSelector Targets, ModifierSpec Spec);

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
/// Modifiers that target the same layer stack in recipe order (smoothquant then gptq, sparsegpt then gptq); the one that
/// quantizes a layer must come last among them, followed at most by a compensation of its error (eora). lm_head is kept unless a modifier names it (see <see cref="TargetSelector"/>);
/// token embeddings are always kept. Recipes can also be built in code (<see cref="From"/>, <see cref="Then"/>).
/// </summary>
public sealed class Recipe
{
    public string Name { get; }
    /// <summary>The recipe's YAML, saved beside the compressed checkpoint.</summary>
    public string Text { get; }
    public IReadOnlyList<Modifier> Modifiers { get; }

    internal Recipe(string name, string text, IReadOnlyList<Modifier> modifiers)
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
        return Parse(Formats.TextFile.ReadAll(presetOrPath, "a YAML recipe"), Path.GetFileNameWithoutExtension(presetOrPath), presetOrPath);
    }

    public static Recipe Parse(string yaml, string name, string source)
    {
        var tree = RecipeYaml.Read(yaml, source);
        if (tree.Root is not Dictionary<string, object?> root || !root.TryGetValue("modifiers", out var list))
            throw ShrinkException.InFile(tree.Where(tree.Root), "a recipe is a mapping with a 'modifiers' list");
        if (root.Keys.FirstOrDefault(k => k != "modifiers") is { } extra) throw ShrinkException.InFile(tree.Where(root), $"unknown top-level key '{extra}'");
        if (list is not List<object?> items || items.Count == 0) throw ShrinkException.InFile(tree.Where(root), "'modifiers' must be a non-empty list");

        var modifiers = new List<Modifier>();
        foreach (var item in items)
        {
            // Problems inside a modifier name the line and column where its mapping starts.
            string where = tree.Where(item ?? list);
            if (item is not Dictionary<string, object?> entry || !entry.TryGetValue("method", out var m) || m is not string method)
                throw ShrinkException.InFile(where, "each modifier needs 'method: NAME'");
            var parameters = new Dictionary<string, object?>(entry.Where(kv => kv.Key != "method"));
            var p = new RecipeParameters(parameters, where, method);
            var (targetList, ignoreList) = (p.List("targets", ["Linear"]), p.List("ignore", []));
            var targets = new TargetSelector(targetList, ignoreList, where);
            var created = MethodRegistry.Create(method, p);
            p.RejectUnknown();
            if (!created.CanTargetLmHead && targets.Matches(0, LinearRole.LmHead))
                throw ShrinkException.InFile(where, $"modifier '{method}': cannot target lm_head (it has no heads, channels or block to remove)");
            // Every other parameter is a scalar once the method accepted it.
            var rest = parameters.Where(kv => kv.Key is not ("targets" or "ignore") && kv.Value is string).ToDictionary(kv => kv.Key, kv => (string)kv.Value!);
            modifiers.Add(new Modifier(created, targets, new ModifierSpec(method, targetList, ignoreList, rest)));
        }
        return new Recipe(name, yaml, modifiers);
    }

    /// <summary>A recipe built in code: the specs written as recipe YAML (what <see cref="Text"/> saves) and parsed, so it is checked like a file.</summary>
    public static Recipe From(string name, IEnumerable<ModifierSpec> modifiers)
    {
        var s = new System.Text.StringBuilder("modifiers:\n");
        foreach (var m in modifiers) m.WriteYaml(s);
        return Parse(s.ToString(), name, $"recipe '{name}'");
    }

    /// <summary>This recipe's modifiers followed by <paramref name="next"/>'s (methods stack where their targets meet).</summary>
    public Recipe Then(Recipe next, string? name = null) =>
        From(name ?? $"{Name}+{next.Name}", Modifiers.Concat(next.Modifiers).Select(m => m.Spec));
}
