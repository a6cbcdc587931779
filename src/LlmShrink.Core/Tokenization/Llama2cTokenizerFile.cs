using System.Text;

namespace LlmShrink.Tokenization;

/// <summary>
/// llama2.c's <c>tokenizer.bin</c>: int32 max_token_length, then for each of vocab_size tokens a float32 score, an int32
/// byte length and the UTF-8 bytes. The exporter wrote ▁ as a plain space and BOS/EOS as "\n&lt;s&gt;\n"/"\n&lt;/s&gt;\n";
/// run.c's encoder is SentencePiece BPE with a dummy prefix, so the pieces go back to SentencePiece form here.
/// </summary>
public static class Llama2cTokenizerFile
{
    // run.c's fixed layout: 0 = <unk>, 1 = BOS, 2 = EOS, then the 256 byte pieces <0x00>..<0xFF>.
    private const int UnknownId = 0, BosId = 1, EosId = 2;

    public static SentencePieceModel Read(string path, int vocabSize)
    {
        if (vocabSize <= EosId) throw ShrinkException.InFile(path, $"vocabulary size {vocabSize} is too small for <unk>, BOS and EOS");
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (IOException e) { throw ShrinkException.InFile(path, $"cannot read tokenizer: {e.Message}"); }

        // Each token needs at least 8 bytes (score + length): reject a vocab size the file cannot hold before allocating.
        if ((long)vocabSize * 8 + 4 > bytes.Length)
            throw ShrinkException.InFile(path, $"file of {bytes.Length} bytes cannot hold {vocabSize} tokens");

        var reader = new BinaryReader(new MemoryStream(bytes));
        int maxTokenLength = reader.ReadInt32();
        if (maxTokenLength <= 0) throw ShrinkException.InFile(path, $"invalid max_token_length {maxTokenLength}");

        var pieces = new string[vocabSize];
        var scores = new float[vocabSize];
        var kinds = new TokenKind[vocabSize];
        for (int i = 0; i < vocabSize; i++)
        {
            long remaining = bytes.Length - reader.BaseStream.Position;
            if (remaining < 8) throw ShrinkException.InFile(path, $"truncated at token {i} of {vocabSize}");
            scores[i] = reader.ReadSingle();
            int length = reader.ReadInt32();
            if (length < 0 || length > maxTokenLength || length > remaining - 8)
                throw ShrinkException.InFile(path, $"token {i} has invalid length {length} (max {maxTokenLength}, {remaining - 8} bytes left)");
            string text = Encoding.UTF8.GetString(reader.ReadBytes(length));
            pieces[i] = text.Replace(' ', '▁');
            kinds[i] = i switch
            {
                UnknownId => TokenKind.Unknown,
                BosId or EosId => TokenKind.Control,
                _ when IsBytePiece(text) => TokenKind.Byte,
                _ => TokenKind.Normal,
            };
        }
        // The specials get their SentencePiece names: control pieces are never matched in text nor decoded anyway.
        pieces[UnknownId] = "<unk>";
        pieces[BosId] = "<s>";
        pieces[EosId] = "</s>";
        return new SentencePieceModel(pieces, scores, kinds, SentencePieceAlgorithm.Bpe, UnknownId, BosId, EosId,
            AddDummyPrefix: true, RemoveExtraWhitespaces: false);
    }

    /// <summary>"&lt;0xXX&gt;" with two upper-case hex digits, as SentencePiece names byte pieces.</summary>
    internal static bool IsBytePiece(string piece) =>
        piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>'
        && Uri.IsHexDigit(piece[3]) && Uri.IsHexDigit(piece[4]);
}
