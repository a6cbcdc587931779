using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace LlmShrink.Compression.Recipes;

/// <summary>A parsed YAML document as plain values, with where each mapping and sequence began in the text.</summary>
public sealed class YamlTree
{
    private readonly Dictionary<object, Mark> _starts = new(ReferenceEqualityComparer.Instance);

    internal YamlTree(string source) => Source = source;

    public string Source { get; }
    public object? Root { get; internal set; }

    internal void Remember(object node, Mark start) => _starts[node] = start;

    /// <summary>"source: line L, column C" for a mapping or sequence of this tree, so a problem found later in it (an unknown
    /// key, a bad value) is reported where it is; just the source for anything else.</summary>
    public string Where(object? node) =>
        node is not null && _starts.TryGetValue(node, out var mark) ? $"{Source}: line {mark.Line}, column {mark.Column}" : Source;
}

/// <summary>
/// Recipes and candidate menus are YAML 1.1 read by YamlDotNet. Values come back as <see cref="Dictionary{TKey,TValue}"/>
/// (string keys, in file order), <see cref="List{T}"/> and <see cref="string"/> (plain null, ~ and empty values are
/// null), which the recipe code then checks key by key. A syntax error is one line naming the file, line and column.
/// </summary>
public static class RecipeYaml
{
    public static object? Parse(string text, string source) => Read(text, source).Root;

    public static YamlTree Read(string text, string source)
    {
        RejectTabIndentation(text, source);
        var stream = new YamlStream();
        try { stream.Load(new StringReader(text)); }
        catch (YamlException e) { throw Error(source, e.Start, Describe(e)); }
        // YamlDotNet's scanner fails this way, without a position, on a plain scalar that runs into the end of an unclosed
        // flow collection ("bits: {a: [").
        catch (InvalidOperationException) { throw ShrinkException.InFile(source, "not valid YAML: a '[' or '{' is never closed"); }
        // Its node builder fails this way, also without a position, on an alias glued to a value (pattern: "2:4"*a).
        catch (ArgumentException) { throw ShrinkException.InFile(source, "not valid YAML: a value is followed by text that belongs to no key (an *alias?)"); }
        var tree = new YamlTree(source);
        if (stream.Documents.Count > 1) throw Error(source, stream.Documents[1].RootNode.Start, "a recipe is one YAML document, not several");
        if (stream.Documents.Count == 1) tree.Root = Convert(stream.Documents[0].RootNode, tree);
        return tree;
    }

    private static object? Convert(YamlNode node, YamlTree tree)
    {
        switch (node)
        {
            case YamlScalarNode scalar:
                return scalar.Style == ScalarStyle.Plain && scalar.Value is null or "" or "~" or "null" or "Null" or "NULL" ? null : scalar.Value;
            case YamlSequenceNode sequence:
                {
                    var list = sequence.Children.Select(child => Convert(child, tree)).ToList();
                    tree.Remember(list, sequence.Start);
                    return list;
                }
            case YamlMappingNode mapping:
                {
                    var map = new Dictionary<string, object?>(StringComparer.Ordinal);
                    foreach (var (key, value) in mapping.Children)
                    {
                        if (key is not YamlScalarNode { Value: { } name }) throw Error(tree.Source, key.Start, "keys must be plain names");
                        if (!map.TryAdd(name, Convert(value, tree))) throw Error(tree.Source, key.Start, $"key '{name}' appears twice");
                    }
                    tree.Remember(map, mapping.Start);
                    return map;
                }
            default:
                throw Error(tree.Source, node.Start, $"unsupported YAML node {node.NodeType}");
        }
    }

    /// <summary>YAML forbids tabs in indentation; YamlDotNet says so at the start of the enclosing mapping, this names the line.</summary>
    private static void RejectTabIndentation(string text, string source)
    {
        var lines = text.Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            int indent = lines[i].Length - lines[i].TrimStart(' ', '\t').Length;
            int tab = lines[i].IndexOf('\t', 0, indent);
            if (tab >= 0 && lines[i].Trim().Length > 0) throw ShrinkException.InFile(source, $"line {i + 1}, column {tab + 1}: tabs are not allowed for indentation");
        }
    }

    /// <summary>YamlDotNet's message without its own "(Line: …, Col: …)" prefix, which <see cref="Error"/> states once.</summary>
    private static string Describe(YamlException e)
    {
        string message = (e.InnerException as YamlException)?.Message ?? e.Message;
        int close = message.IndexOf("): ", StringComparison.Ordinal);
        return message.StartsWith("(Line:", StringComparison.Ordinal) && close > 0 ? message[(close + 3)..] : message;
    }

    private static ShrinkException Error(string source, Mark at, string problem) =>
        ShrinkException.InFile(source, $"line {at.Line}, column {at.Column}: {problem}");
}
