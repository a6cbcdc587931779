using System.Text.Json;

namespace LlmShrink.Tokenization;

/// <summary>The few entries of a Hugging Face <c>tokenizer_config.json</c> that change tokenization; null = not stated.</summary>
public sealed record TokenizerConfig(bool? AddBos, string? BosToken, string? EosToken)
{
    public static readonly TokenizerConfig Empty = new(null, null, null);

    /// <summary>Reads <paramref name="path"/>, or <see cref="Empty"/> when the file does not exist.</summary>
    public static TokenizerConfig Read(string path)
    {
        if (!File.Exists(path)) return Empty;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            var root = doc.RootElement;
            bool? addBos = root.TryGetProperty("add_bos_token", out var a) && a.ValueKind is JsonValueKind.True or JsonValueKind.False ? a.GetBoolean() : null;
            return new TokenizerConfig(addBos, TokenText(root, "bos_token"), TokenText(root, "eos_token"));
        }
        catch (JsonException e)
        {
            throw ShrinkException.InFile(path, $"invalid JSON: {e.Message}");
        }
    }

    /// <summary>A token given as a string or as an AddedToken object {"content": ...}.</summary>
    private static string? TokenText(JsonElement root, string name) =>
        !root.TryGetProperty(name, out var t) ? null
        : t.ValueKind == JsonValueKind.String ? t.GetString()
        : t.ValueKind == JsonValueKind.Object && t.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String ? c.GetString()
        : null;
}
