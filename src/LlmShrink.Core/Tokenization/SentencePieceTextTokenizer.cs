using Microsoft.ML.Tokenizers;

namespace LlmShrink.Tokenization;

/// <summary>
/// A SentencePiece vocabulary (Llama 1/2, TinyLlama, Mistral, llama2.c, tinylit) run by Microsoft.ML.Tokenizers'
/// SentencePiece engine: spaces become ▁, a dummy ▁ goes in front of the text, adjacent symbols merge by best piece
/// score (BPE) and characters outside the vocabulary fall back to &lt;0xXX&gt; byte pieces — the same algorithm as
/// llama.cpp's SPM tokenizer and llama2.c's run.c.
/// </summary>
public sealed class SentencePieceTextTokenizer : ITextTokenizer
{
    private readonly SentencePieceTokenizer _engine;
    private readonly bool _addDummyPrefix;

    public SentencePieceTextTokenizer(SentencePieceModel model, bool addBos, string sourcePath)
        : this(model.ToProtobuf(), model, addBos, sourcePath) { }

    /// <summary>Loads a serialized ModelProto (a tokenizer.model file's bytes), <paramref name="model"/> being what it holds.</summary>
    public SentencePieceTextTokenizer(byte[] modelProto, SentencePieceModel model, bool addBos, string sourcePath)
    {
        try
        {
            _engine = SentencePieceTokenizer.Create(new MemoryStream(modelProto), addBeginningOfSentence: false, addEndOfSentence: false);
        }
        catch (Exception e) when (e is not ShrinkException)
        {
            throw ShrinkException.InFile(sourcePath, $"cannot load SentencePiece vocabulary: {e.Message}");
        }
        VocabSize = model.Pieces.Length;
        BosId = model.BosId;
        EosId = model.EosId;
        AddBos = addBos;
        _addDummyPrefix = model.AddDummyPrefix;
    }

    public int VocabSize { get; }
    public int BosId { get; }
    public int EosId { get; }
    public bool AddBos { get; }

    public int[] Encode(string text, bool addBos)
    {
        // Empty text is [BOS] alone, as in llama.cpp (the engine would drop BOS too).
        if (text.Length == 0) return addBos ? [BosId] : [];
        var ids = _engine.EncodeToIds(text, addBos, addEndOfSentence: false);
        return [.. ids];
    }

    /// <summary>
    /// The continuation starts with the space that separated it from the earlier text. Its ▁ cannot merge with the
    /// earlier text's last piece (SentencePiece trains with whitespace splitting, so ▁ only begins pieces); the dummy
    /// prefix, when the model adds one, stands for that space.
    /// </summary>
    public int[] EncodeContinuation(string text)
    {
        if (text.Length == 0 || text[0] != ' ') throw new ArgumentException("a continuation starts with a space", nameof(text));
        return Encode(_addDummyPrefix ? text[1..] : text, addBos: false);
    }

    /// <summary>Byte pieces are joined back into UTF-8; control pieces (BOS, EOS) are omitted; the dummy-prefix space
    /// in front of the first piece is dropped.</summary>
    public string Decode(ReadOnlySpan<int> ids)
    {
        foreach (int id in ids)
            if ((uint)id >= (uint)VocabSize) throw new ArgumentOutOfRangeException(nameof(ids), $"token id {id} outside the vocabulary of {VocabSize}");
        return _engine.Decode(ids.ToArray(), considerSpecialTokens: false);
    }
}
