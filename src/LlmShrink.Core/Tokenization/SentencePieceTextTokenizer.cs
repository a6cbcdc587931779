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

    public SentencePieceTextTokenizer(SentencePieceModel model, bool addBos, string sourcePath)
        : this(model.ToProtobuf(), model.Pieces.Length, model.BosId, model.EosId, addBos, sourcePath) { }

    /// <summary>Loads a serialized ModelProto (a tokenizer.model file's bytes) with <paramref name="pieceCount"/> pieces.</summary>
    public SentencePieceTextTokenizer(byte[] modelProto, int pieceCount, int bosId, int eosId, bool addBos, string sourcePath)
    {
        try
        {
            _engine = SentencePieceTokenizer.Create(new MemoryStream(modelProto), addBeginningOfSentence: false, addEndOfSentence: false);
        }
        catch (Exception e) when (e is not ShrinkException)
        {
            throw ShrinkException.InFile(sourcePath, $"cannot load SentencePiece vocabulary: {e.Message}");
        }
        VocabSize = pieceCount;
        BosId = bosId;
        EosId = eosId;
        AddBos = addBos;
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

    /// <summary>Byte pieces are joined back into UTF-8; control pieces (BOS, EOS) are omitted; the dummy-prefix space
    /// in front of the first piece is dropped.</summary>
    public string Decode(ReadOnlySpan<int> ids)
    {
        foreach (int id in ids)
            if ((uint)id >= (uint)VocabSize) throw new ArgumentOutOfRangeException(nameof(ids), $"token id {id} outside the vocabulary of {VocabSize}");
        return _engine.Decode(ids.ToArray(), considerSpecialTokens: false);
    }
}
