using System.Buffers.Binary;
using System.Text;

namespace LlmShrink.Tokenization;

/// <summary>
/// The part of a SentencePiece <c>ModelProto</c> (sentencepiece_model.proto) a tokenizer needs: the pieces with their
/// scores and kinds, the special ids, and the normalizer flags. <see cref="Read"/> parses a <c>tokenizer.model</c>;
/// <see cref="ToProtobuf"/> writes one, so vocabularies from GGUF files, llama2.c's tokenizer.bin and SentencePiece-style
/// tokenizer.json all run on the same SentencePiece engine.
/// </summary>
public sealed record SentencePieceModel(
    string[] Pieces,
    float[] Scores,
    TokenKind[] Kinds,
    SentencePieceAlgorithm Algorithm,
    int UnknownId,
    int BosId,
    int EosId,
    bool AddDummyPrefix,
    bool RemoveExtraWhitespaces)
{
    /// <summary>Byte fallback is on exactly when the vocabulary has &lt;0xXX&gt; byte pieces.</summary>
    public bool ByteFallback => Kinds.Contains(TokenKind.Byte);

    // Field numbers from sentencepiece_model.proto.
    private const int ModelPieces = 1, ModelTrainerSpec = 2, ModelNormalizerSpec = 3;
    private const int PieceText = 1, PieceScore = 2, PieceType = 3;
    private const int TrainerModelType = 3, TrainerByteFallback = 35, TrainerUnkId = 40, TrainerBosId = 41, TrainerEosId = 42, TrainerPadId = 43;
    private const int NormalizerName = 1, NormalizerAddDummyPrefix = 3, NormalizerRemoveExtraWhitespaces = 4, NormalizerEscapeWhitespaces = 5;

    private const int WireVarint = 0, WireFixed64 = 1, WireLengthDelimited = 2, WireFixed32 = 5;

    /// <summary>Parses a serialized ModelProto; every length is checked against the buffer (corrupt → <see cref="ShrinkException"/>).</summary>
    public static SentencePieceModel Read(byte[] bytes, string path)
    {
        var pieces = new List<string>();
        var scores = new List<float>();
        var kinds = new List<TokenKind>();
        // Proto defaults (sentencepiece_model.proto): unigram, unk 0, bos 1, eos 2, dummy prefix on, whitespace removal on.
        int algorithm = 1, unk = 0, bos = 1, eos = 2;
        bool addDummyPrefix = true, removeExtraWhitespaces = true;

        var model = new ProtoReader(bytes, path);
        while (model.Next(out int field, out int wire))
        {
            if (field == ModelPieces && wire == WireLengthDelimited)
            {
                var piece = model.Message();
                string text = ""; float score = 0; int type = (int)TokenKind.Normal;
                while (piece.Next(out int f, out int w))
                {
                    if (f == PieceText && w == WireLengthDelimited) text = Encoding.UTF8.GetString(piece.Bytes());
                    else if (f == PieceScore && w == WireFixed32) score = piece.Float();
                    else if (f == PieceType && w == WireVarint) type = (int)piece.Varint();
                    else piece.Skip(w);
                }
                if (type is < 1 or > 6) throw ShrinkException.InFile(path, $"piece {pieces.Count} has unknown type {type}");
                pieces.Add(text); scores.Add(score); kinds.Add((TokenKind)type);
            }
            else if (field == ModelTrainerSpec && wire == WireLengthDelimited)
            {
                var trainer = model.Message();
                while (trainer.Next(out int f, out int w))
                {
                    if (w != WireVarint) { trainer.Skip(w); continue; }
                    long value = (long)trainer.Varint();
                    if (f == TrainerModelType) algorithm = (int)value;
                    else if (f == TrainerUnkId) unk = (int)value;
                    else if (f == TrainerBosId) bos = (int)value;
                    else if (f == TrainerEosId) eos = (int)value;
                }
            }
            else if (field == ModelNormalizerSpec && wire == WireLengthDelimited)
            {
                var normalizer = model.Message();
                while (normalizer.Next(out int f, out int w))
                {
                    if (w != WireVarint) { normalizer.Skip(w); continue; }
                    bool value = normalizer.Varint() != 0;
                    if (f == NormalizerAddDummyPrefix) addDummyPrefix = value;
                    else if (f == NormalizerRemoveExtraWhitespaces) removeExtraWhitespaces = value;
                }
            }
            else model.Skip(wire);
        }

        if (pieces.Count == 0) throw ShrinkException.InFile(path, "SentencePiece model has no pieces");
        if (!Enum.IsDefined((SentencePieceAlgorithm)algorithm))
            throw ShrinkException.InFile(path, $"unsupported SentencePiece model type {algorithm} (only unigram and BPE)");
        foreach (var (name, id) in new[] { ("unk", unk), ("bos", bos), ("eos", eos) })
            if (id < -1 || id >= pieces.Count) throw ShrinkException.InFile(path, $"{name}_id {id} outside the {pieces.Count} pieces");
        return new SentencePieceModel([.. pieces], [.. scores], [.. kinds], (SentencePieceAlgorithm)algorithm, unk, bos, eos,
            addDummyPrefix, removeExtraWhitespaces);
    }

    /// <summary>
    /// The serialized ModelProto. Whitespace is always escaped to ▁ (every Llama-family vocabulary relies on it); the
    /// normalizer is "identity" — no NFKC table — which is what llama.cpp and Hugging Face's fast tokenizers apply.
    /// </summary>
    public byte[] ToProtobuf()
    {
        var output = new MemoryStream();
        for (int i = 0; i < Pieces.Length; i++)
        {
            var piece = new MemoryStream();
            WriteBytes(piece, PieceText, Encoding.UTF8.GetBytes(Pieces[i]));
            WriteFloat(piece, PieceScore, Scores[i]);
            WriteVarint(piece, PieceType, (ulong)Kinds[i]);
            WriteBytes(output, ModelPieces, piece.ToArray());
        }

        var trainer = new MemoryStream();
        WriteVarint(trainer, TrainerModelType, (ulong)Algorithm);
        WriteVarint(trainer, TrainerByteFallback, ByteFallback ? 1UL : 0UL);
        WriteVarint(trainer, TrainerUnkId, (ulong)(long)UnknownId);
        WriteVarint(trainer, TrainerBosId, (ulong)(long)BosId);
        WriteVarint(trainer, TrainerEosId, (ulong)(long)EosId);
        WriteVarint(trainer, TrainerPadId, unchecked((ulong)-1L)); // negative int32s are sign-extended to 10 bytes
        WriteBytes(output, ModelTrainerSpec, trainer.ToArray());

        var normalizer = new MemoryStream();
        WriteBytes(normalizer, NormalizerName, "identity"u8.ToArray());
        WriteVarint(normalizer, NormalizerAddDummyPrefix, AddDummyPrefix ? 1UL : 0UL);
        WriteVarint(normalizer, NormalizerRemoveExtraWhitespaces, RemoveExtraWhitespaces ? 1UL : 0UL);
        WriteVarint(normalizer, NormalizerEscapeWhitespaces, 1);
        WriteBytes(output, ModelNormalizerSpec, normalizer.ToArray());
        return output.ToArray();
    }

    private static void WriteTag(Stream s, int field, int wire) => WriteRawVarint(s, (ulong)(field << 3 | wire));

    private static void WriteVarint(Stream s, int field, ulong value) { WriteTag(s, field, WireVarint); WriteRawVarint(s, value); }

    private static void WriteFloat(Stream s, int field, float value)
    {
        WriteTag(s, field, WireFixed32);
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteSingleLittleEndian(b, value);
        s.Write(b);
    }

    private static void WriteBytes(Stream s, int field, byte[] value)
    {
        WriteTag(s, field, WireLengthDelimited);
        WriteRawVarint(s, (ulong)value.Length);
        s.Write(value);
    }

    private static void WriteRawVarint(Stream s, ulong value)
    {
        for (; value >= 0x80; value >>= 7) s.WriteByte((byte)(value | 0x80));
        s.WriteByte((byte)value);
    }

    /// <summary>Protobuf wire-format reader over one message's bytes; never reads past its end.</summary>
    private sealed class ProtoReader(byte[] buffer, string path, int start, int end)
    {
        private int _position = start;

        public ProtoReader(byte[] buffer, string path) : this(buffer, path, 0, buffer.Length) { }

        public bool Next(out int field, out int wire)
        {
            field = wire = 0;
            if (_position >= end) return false;
            ulong tag = Varint();
            field = (int)(tag >> 3);
            wire = (int)(tag & 7);
            return true;
        }

        public ulong Varint()
        {
            ulong value = 0;
            for (int shift = 0; shift < 64; shift += 7)
            {
                if (_position >= end) throw Corrupt("truncated varint");
                byte b = buffer[_position++];
                value |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80) return value;
            }
            throw Corrupt("varint longer than 10 bytes");
        }

        public float Float() => BinaryPrimitives.ReadSingleLittleEndian(Take(4));

        public ReadOnlySpan<byte> Bytes() => Take(Length());

        public ProtoReader Message()
        {
            int length = Length();
            var message = new ProtoReader(buffer, path, _position, _position + length);
            _position += length;
            return message;
        }

        public void Skip(int wire)
        {
            switch (wire)
            {
                case WireVarint: Varint(); break;
                case WireFixed64: Take(8); break;
                case WireLengthDelimited: Take(Length()); break;
                case WireFixed32: Take(4); break;
                default: throw Corrupt($"unsupported protobuf wire type {wire}");
            }
        }

        private int Length()
        {
            ulong length = Varint();
            if (length > (ulong)(end - _position)) throw Corrupt($"field length {length} runs past the end of its message");
            return (int)length;
        }

        private ReadOnlySpan<byte> Take(int count)
        {
            if (count > end - _position) throw Corrupt("truncated field");
            var span = buffer.AsSpan(_position, count);
            _position += count;
            return span;
        }

        private ShrinkException Corrupt(string problem) => ShrinkException.InFile(path, $"corrupt SentencePiece model at byte {_position}: {problem}");
    }
}

/// <summary>SentencePiece's <c>TrainerSpec.ModelType</c>.</summary>
public enum SentencePieceAlgorithm
{
    Unigram = 1,
    Bpe = 2,
}
