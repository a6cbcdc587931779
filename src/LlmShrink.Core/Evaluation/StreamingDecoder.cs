using System.Runtime.InteropServices;
using LlmShrink.Tokenization;

namespace LlmShrink.Evaluation;

/// <summary>
/// Turns a growing token sequence into the text to print next. Tokens are not always whole characters (byte
/// fallback splits a multi-byte UTF-8 character over several tokens, and SentencePiece drops the leading space
/// only at the very start), so the whole sequence is decoded each time and only the new suffix is returned;
/// a trailing incomplete character (decoded as U+FFFD) is held back until its remaining bytes arrive.
/// </summary>
public sealed class StreamingDecoder
{
    private readonly ITextTokenizer _tokenizer;
    private readonly List<int> _ids;
    private readonly string _promptText;
    private int _returned;

    /// <param name="promptIds">The prompt, whose own text is not returned: only what follows it.</param>
    public StreamingDecoder(ITextTokenizer tokenizer, ReadOnlySpan<int> promptIds)
    {
        _tokenizer = tokenizer;
        _ids = [.. promptIds];
        _promptText = tokenizer.Decode(promptIds);
    }

    /// <summary>Adds a generated token; returns the text that became complete (possibly empty).</summary>
    public string Append(int id)
    {
        _ids.Add(id);
        return Take(final: false);
    }

    /// <summary>Whatever is left, including a genuinely undecodable tail.</summary>
    public string Finish() => Take(final: true);

    private string Take(bool final)
    {
        string text = _tokenizer.Decode(CollectionsMarshal.AsSpan(_ids));
        string continuation = text.StartsWith(_promptText, StringComparison.Ordinal) ? text[_promptText.Length..] : text;
        int end = continuation.Length;
        if (!final) while (end > _returned && continuation[end - 1] == '\uFFFD') end--;
        if (end <= _returned) return "";
        string fresh = continuation[_returned..end];
        _returned = end;
        return fresh;
    }
}
