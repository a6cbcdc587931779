using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace LlmShrink.Tokenization;

/// <summary>
/// Byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM): special tokens are cut out whole, the rest is split into words by the
/// pre-tokenizer patterns, each word's UTF-8 bytes are spelled with <see cref="ByteToUnicode"/>, and Microsoft.ML.Tokenizers'
/// BPE engine applies the merges in rank order within the word. Every byte has a token, so no text is unknown.
/// </summary>
public sealed class ByteLevelBpeTokenizer : ITextTokenizer
{
    /// <summary>A token matched as a whole in the text. Control tokens (BOS, chat markers) are skipped when decoding;
    /// others decode as their text.</summary>
    public sealed record SpecialToken(string Text, int Id, bool SkipWhenDecoding);

    private readonly Dictionary<string, int> _tokens;
    private readonly Dictionary<int, string> _textOfId;
    private readonly Dictionary<int, SpecialToken> _specialOfId;
    private readonly Regex? _specialPattern;
    private readonly Dictionary<string, int> _specialIdOfText;
    private readonly Regex[] _preTokenizers;
    private readonly bool _ignoreMerges, _addPrefixSpace;
    private readonly NormalizationForm? _normalization;
    private readonly BpeTokenizer _engine;

    /// <param name="tokens">Byte-level spelling → id of the ordinary tokens.</param>
    /// <param name="merges">Merge rules, highest priority first.</param>
    /// <param name="ignoreMerges">A word that is a token as a whole becomes that token without merging (Llama 3).</param>
    /// <param name="normalization">Unicode normalization applied to the text first (Qwen2: NFC).</param>
    /// <param name="addPrefixSpace">Put a space before text that does not start with one (GPT-2's add_prefix_space).</param>
    public ByteLevelBpeTokenizer(IReadOnlyDictionary<string, int> tokens, IReadOnlyList<(string Left, string Right)> merges,
        IReadOnlyList<SpecialToken> specials, Regex[] preTokenizers, bool ignoreMerges, bool addPrefixSpace,
        int bosId, int eosId, bool addBos, int vocabSize, NormalizationForm? normalization = null)
    {
        _normalization = normalization;
        _tokens = new Dictionary<string, int>(tokens);
        _textOfId = [];
        foreach (var (text, id) in tokens) _textOfId.TryAdd(id, text);
        _specialOfId = [];
        _specialIdOfText = [];
        foreach (var special in specials)
        {
            _specialOfId.TryAdd(special.Id, special);
            _specialIdOfText.TryAdd(special.Text, special.Id);
        }
        // Longest first, so "<|end|>" is not cut short by a special token that is its prefix.
        _specialPattern = specials.Count == 0 ? null
            : new Regex(string.Join("|", specials.Select(s => s.Text).OrderByDescending(t => t.Length).Select(Regex.Escape)), RegexOptions.CultureInvariant);
        _preTokenizers = preTokenizers;
        _ignoreMerges = ignoreMerges;
        _addPrefixSpace = addPrefixSpace;
        _engine = BpeTokenizer.Create(new BpeOptions(_tokens)
        {
            Merges = merges.Select(m => m.Left + " " + m.Right),
            // Words arrive already cut and spelled byte-level (no whitespace left): the engine must take each whole.
            PreTokenizer = new RegexPreTokenizer(new Regex(@"[\s\S]+"), null),
        });
        BosId = bosId;
        EosId = eosId;
        AddBos = addBos;
        VocabSize = Math.Max(vocabSize, 1 + Math.Max(tokens.Count == 0 ? -1 : tokens.Values.Max(), specials.Count == 0 ? -1 : specials.Max(s => s.Id)));
    }

    public int VocabSize { get; }
    public int BosId { get; }
    public int EosId { get; }
    public bool AddBos { get; }

    public int[] Encode(string text, bool addBos)
    {
        var ids = new List<int>();
        if (addBos && BosId >= 0) ids.Add(BosId); // some vocabularies (Qwen2) have no BOS at all
        if (_normalization is { } form) text = text.Normalize(form);
        int end = 0;
        if (_specialPattern is not null)
            foreach (Match m in _specialPattern.Matches(text))
            {
                EncodeOrdinary(text[end..m.Index], ids);
                ids.Add(_specialIdOfText[m.Value]);
                end = m.Index + m.Length;
            }
        EncodeOrdinary(text[end..], ids);
        return [.. ids];
    }

    /// <summary>The leading space begins a pre-token in every pattern (none lets a match run from a non-space across a
    /// single space), so the continuation splits exactly as it does inside the whole text.</summary>
    public int[] EncodeContinuation(string text)
    {
        if (text.Length == 0 || text[0] != ' ') throw new ArgumentException("a continuation starts with a space", nameof(text));
        return Encode(text, addBos: false);
    }

    private void EncodeOrdinary(string text, List<int> ids)
    {
        if (text.Length == 0) return;
        if (_addPrefixSpace && text[0] != ' ') text = " " + text;
        foreach (string word in PreTokenizerPatterns.Split(text, _preTokenizers))
        {
            string spelled = ByteToUnicode.Encode(Encoding.UTF8.GetBytes(word));
            if (_ignoreMerges && _tokens.TryGetValue(spelled, out int whole)) ids.Add(whole);
            else ids.AddRange(_engine.EncodeToIds(spelled));
        }
    }

    public string Decode(ReadOnlySpan<int> ids)
    {
        var bytes = new List<byte>();
        foreach (int id in ids)
        {
            if (_specialOfId.TryGetValue(id, out var special))
            {
                if (!special.SkipWhenDecoding) bytes.AddRange(Encoding.UTF8.GetBytes(special.Text));
            }
            else if (id == BosId || id == EosId) continue;
            else if (_textOfId.TryGetValue(id, out string? token)) ByteToUnicode.Decode(token, bytes);
            else if ((uint)id >= (uint)VocabSize) throw new ArgumentOutOfRangeException(nameof(ids), $"token id {id} outside the vocabulary of {VocabSize}");
        }
        return Encoding.UTF8.GetString([.. bytes]);
    }
}
