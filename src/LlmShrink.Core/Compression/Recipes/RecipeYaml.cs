using System.Text;

namespace LlmShrink.Compression.Recipes;

/// <summary>
/// The subset of YAML that recipes use: block mappings, block sequences ("- "), flow sequences ("[a, b]"),
/// plain and quoted scalars, and comments. Values come back as <see cref="Dictionary{TKey,TValue}"/> (string keys),
/// <see cref="List{T}"/> and <see cref="string"/>. Anything outside the subset is an error naming the line, so a
/// recipe never silently means something else.
/// </summary>
public static class RecipeYaml
{
    private sealed record Line(int Number, int Indent, string Text);

    public static object? Parse(string text, string source)
    {
        var lines = new List<Line>();
        var raw = text.Replace("\r\n", "\n").Split('\n');
        for (int i = 0; i < raw.Length; i++)
        {
            string content = StripComment(raw[i], source, i + 1).TrimEnd();
            if (content.Trim().Length == 0 || content.Trim() == "---") continue;
            if (content.Contains('\t')) throw Error(source, i + 1, "tabs are not allowed for indentation");
            int indent = content.Length - content.TrimStart(' ').Length;
            lines.Add(new Line(i + 1, indent, content.Trim()));
        }
        if (lines.Count == 0) return null;
        int index = 0;
        var value = ParseBlock(lines, ref index, lines[0].Indent, source);
        if (index < lines.Count) throw Error(source, lines[index].Number, "unexpected indentation");
        return value;
    }

    private static object ParseBlock(List<Line> lines, ref int index, int indent, string source) =>
        lines[index].Text.StartsWith("- ") || lines[index].Text == "-"
            ? ParseSequence(lines, ref index, indent, source)
            : ParseMapping(lines, ref index, indent, source);

    private static List<object?> ParseSequence(List<Line> lines, ref int index, int indent, string source)
    {
        var items = new List<object?>();
        while (index < lines.Count && lines[index].Indent == indent && (lines[index].Text.StartsWith("- ") || lines[index].Text == "-"))
        {
            var line = lines[index];
            string rest = line.Text.Length > 1 ? line.Text[2..].TrimStart() : "";
            if (rest.Length == 0)
            {
                index++;
                items.Add(index < lines.Count && lines[index].Indent > indent ? ParseBlock(lines, ref index, lines[index].Indent, source) : null);
            }
            else if (IsMappingEntry(rest))
            {
                // "- key: value" starts a mapping whose further keys are indented to the column after "- ".
                int itemIndent = indent + (line.Text.Length - rest.Length);
                lines[index] = line with { Indent = itemIndent, Text = rest };
                items.Add(ParseMapping(lines, ref index, itemIndent, source));
            }
            else
            {
                items.Add(ParseScalarOrFlow(rest, source, line.Number));
                index++;
            }
        }
        return items;
    }

    private static Dictionary<string, object?> ParseMapping(List<Line> lines, ref int index, int indent, string source)
    {
        var map = new Dictionary<string, object?>(StringComparer.Ordinal);
        while (index < lines.Count && lines[index].Indent == indent)
        {
            var line = lines[index];
            if (!IsMappingEntry(line.Text)) throw Error(source, line.Number, $"expected 'key: value', found '{line.Text}'");
            int colon = KeyEnd(line.Text);
            string key = Unquote(line.Text[..colon].Trim(), source, line.Number);
            string rest = line.Text[(colon + 1)..].Trim();
            if (map.ContainsKey(key)) throw Error(source, line.Number, $"key '{key}' appears twice");
            index++;
            if (rest.Length > 0) map[key] = ParseScalarOrFlow(rest, source, line.Number);
            else if (index < lines.Count && lines[index].Indent > indent) map[key] = ParseBlock(lines, ref index, lines[index].Indent, source);
            else if (index < lines.Count && lines[index].Indent == indent && lines[index].Text.StartsWith("- "))
                map[key] = ParseSequence(lines, ref index, indent, source); // a sequence may sit at its key's indentation
            else map[key] = null;
        }
        if (index < lines.Count && lines[index].Indent > indent) throw Error(source, lines[index].Number, "unexpected indentation");
        return map;
    }

    private static bool IsMappingEntry(string text) => KeyEnd(text) > 0;

    /// <summary>Position of the colon that ends a key (outside quotes, followed by a space or the end), or −1.</summary>
    private static int KeyEnd(string text)
    {
        if (text.StartsWith('[') || text.StartsWith('{')) return -1;
        char quote = '\0';
        for (int i = 0; i < text.Length; i++)
        {
            char ch = text[i];
            if (quote != '\0') { if (ch == quote) quote = '\0'; continue; }
            if (i == 0 && ch is '"' or '\'') { quote = ch; continue; }
            if (ch == ':' && (i + 1 == text.Length || text[i + 1] == ' ')) return i;
        }
        return -1;
    }

    private static object? ParseScalarOrFlow(string text, string source, int line)
    {
        if (text.StartsWith('['))
        {
            if (!text.EndsWith(']')) throw Error(source, line, "unterminated '['");
            string inner = text[1..^1].Trim();
            if (inner.Length == 0) return new List<object?>();
            return SplitFlow(inner, source, line).Select(item => (object?)Unquote(item.Trim(), source, line)).ToList();
        }
        if (text.StartsWith('{')) throw Error(source, line, "flow mappings '{…}' are not supported; use indented 'key: value' lines");
        if (text is "|" or ">" || text.StartsWith("|") || text.StartsWith(">")) throw Error(source, line, "block scalars are not supported");
        if (text is "~" or "null") return null;
        return Unquote(text, source, line);
    }

    private static List<string> SplitFlow(string inner, string source, int line)
    {
        var parts = new List<string>();
        var current = new StringBuilder();
        char quote = '\0';
        foreach (char ch in inner)
        {
            if (quote != '\0') { current.Append(ch); if (ch == quote) quote = '\0'; continue; }
            if (ch is '"' or '\'') { quote = ch; current.Append(ch); continue; }
            if (ch is '[' or '{') throw Error(source, line, "nested flow collections are not supported");
            if (ch == ',') { parts.Add(current.ToString()); current.Clear(); continue; }
            current.Append(ch);
        }
        if (quote != '\0') throw Error(source, line, "unterminated quoted string");
        parts.Add(current.ToString());
        return parts;
    }

    private static string Unquote(string text, string source, int line)
    {
        if (text.Length >= 2 && (text[0] == '"' && text[^1] == '"' || text[0] == '\'' && text[^1] == '\'')) return text[1..^1];
        if (text.StartsWith('"') || text.StartsWith('\'')) throw Error(source, line, "unterminated quoted string");
        if (text.StartsWith('&') || text.StartsWith('*') || text.StartsWith('!')) throw Error(source, line, "anchors, aliases and tags are not supported");
        return text;
    }

    private static string StripComment(string line, string source, int number)
    {
        char quote = '\0';
        for (int i = 0; i < line.Length; i++)
        {
            char ch = line[i];
            if (quote != '\0') { if (ch == quote) quote = '\0'; continue; }
            if (ch is '"' or '\'' && (i == 0 || line[i - 1] is ' ' or '[' or ',' or ':' or '-')) { quote = ch; continue; }
            if (ch == '#' && (i == 0 || line[i - 1] == ' ')) return line[..i];
        }
        return line;
    }

    private static ShrinkException Error(string source, int line, string problem) => ShrinkException.InFile(source, $"line {line}: {problem}");
}
