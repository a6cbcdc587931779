namespace LlmShrink.Tokenization;

/// <summary>
/// Turns generated tokens into text as they arrive. A token can end in the middle of a UTF-8 character (byte fallback,
/// byte-level BPE) and SentencePiece drops the leading space only of the whole text, so decoding tokens one by one is
/// wrong; instead the whole sequence is decoded each time and the new suffix is returned, holding back trailing
/// U+FFFD characters until the bytes that complete them arrive.
/// </summary>
public sealed class StreamingDecoder(ITextTokenizer tokenizer)
{
    private const char Replacement = '\uFFFD';
    private readonly List<int> _ids = [];
    private int _emitted; // characters of the decoded text already returned

    /// <summary>Adds <paramref name="id"/> and returns the text that became final (often empty or one word).</summary>
    public string Append(int id)
    {
        _ids.Add(id);
        string text = tokenizer.Decode(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_ids));
        int stable = text.Length;
        while (stable > _emitted && text[stable - 1] == Replacement) stable--;
        if (stable <= _emitted) return "";
        string fresh = text[_emitted..stable];
        _emitted = stable;
        return fresh;
    }

    /// <summary>Whatever is still held back (an incomplete character at the very end), e.g. when generation stops.</summary>
    public string Flush()
    {
        string text = tokenizer.Decode(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_ids));
        string rest = text.Length > _emitted ? text[_emitted..] : "";
        _emitted = text.Length;
        return rest;
    }
}
