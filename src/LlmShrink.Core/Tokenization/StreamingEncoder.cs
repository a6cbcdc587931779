namespace LlmShrink.Tokenization;

/// <summary>
/// Tokenizes a text of any length piece by piece, so memory does not grow with the file: each block read is cut at its
/// last single space between a non-space and a letter or digit, the part before is encoded, and the rest carries over
/// as a continuation (<see cref="ITextTokenizer.EncodeContinuation"/>). The concatenated pieces equal the tokens of
/// the whole text (tested on the shared corpora with every tokenizer family).
/// </summary>
public sealed class StreamingEncoder
{
    private readonly ITextTokenizer _tokenizer;
    private readonly TextReader _reader;
    private readonly char[] _block;
    private string _carry = "";
    private bool _first = true, _ended;
    private readonly bool _addBos;

    /// <param name="blockChars">Characters read at a time; a block with no cut point (one huge word) grows the carry.</param>
    public StreamingEncoder(ITextTokenizer tokenizer, TextReader reader, bool addBos, int blockChars = 1 << 16)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(blockChars, 2);
        _tokenizer = tokenizer;
        _reader = reader;
        _addBos = addBos;
        _block = new char[blockChars];
    }

    /// <summary>Characters consumed so far (for progress).</summary>
    public long CharactersRead { get; private set; }

    /// <summary>The next piece's token ids, or null at the end of the text. A piece may be empty.</summary>
    public int[]? Next()
    {
        if (_ended) return null;
        int read = _reader.ReadBlock(_block, 0, _block.Length);
        CharactersRead += read;
        string text = _carry + new string(_block, 0, read);
        int cut = read == 0 ? text.Length : LastCut(text);
        if (read == 0) _ended = true;
        if (cut <= 0 && !_ended)
        {
            _carry = text;
            return [];
        }
        string piece = text[..cut];
        _carry = text[cut..];
        return Encode(piece);
    }

    private int[] Encode(string piece)
    {
        bool first = _first;
        _first = false;
        if (first) return _tokenizer.Encode(piece, _addBos);
        return piece.Length == 0 ? [] : _tokenizer.EncodeContinuation(piece);
    }

    /// <summary>The last index i with text[i] = ' ', text[i−1] not white space and text[i+1] a letter or digit; 0 if none.
    /// The character after the space is inside the block, so the next read cannot change how the cut tokenizes.</summary>
    private static int LastCut(string text)
    {
        for (int i = text.Length - 2; i > 0; i--)
            if (text[i] == ' ' && !char.IsWhiteSpace(text[i - 1]) && char.IsLetterOrDigit(text[i + 1])) return i;
        return 0;
    }
}
