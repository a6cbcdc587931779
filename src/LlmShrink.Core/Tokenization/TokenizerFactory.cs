namespace LlmShrink.Tokenization;

/// <summary>Builds the right <see cref="ITextTokenizer"/> for a model's tokenizer files.</summary>
public static class TokenizerFactory
{
    /// <summary>Tokenizer of a Hugging Face folder (tokenizer.json preferred, else tokenizer.model), or null if it has none.</summary>
    public static ITextTokenizer? FromFolder(string folder)
    {
        var config = TokenizerConfig.Read(Path.Combine(folder, "tokenizer_config.json"));
        string json = Path.Combine(folder, "tokenizer.json");
        if (File.Exists(json)) return HfTokenizerJson.Load(json, config);

        string model = Path.Combine(folder, "tokenizer.model");
        if (File.Exists(model)) return FromSentencePieceFile(model, config.AddBos ?? true);
        return null;
    }

    /// <summary>A SentencePiece <c>tokenizer.model</c>, loaded as it is (its own normalizer flags apply).</summary>
    public static ITextTokenizer FromSentencePieceFile(string path, bool addBos)
    {
        byte[] bytes = File.ReadAllBytes(path);
        var model = SentencePieceModel.Read(bytes, path); // validates the file before the engine sees it
        return new SentencePieceTextTokenizer(bytes, model, addBos, path);
    }

    public static ITextTokenizer FromGguf(GgufVocabulary vocabulary, string sourcePath) => vocabulary.Model switch
    {
        "llama" => new SentencePieceTextTokenizer(GgufSentencePiece(vocabulary, sourcePath), vocabulary.AddBos, sourcePath),
        "gpt2" => GgufByteLevelBpe(vocabulary, sourcePath),
        _ => throw ShrinkException.InFile(sourcePath, $"unsupported tokenizer.ggml.model '{Formats.Gguf.GgufReader.Printable(vocabulary.Model)}' (supported: llama, gpt2)"),
    };

    /// <summary>llama2.c's tokenizer.bin (max token length, then per token: score, length, bytes).</summary>
    public static ITextTokenizer FromLlama2cFile(string path, int vocabSize) =>
        new SentencePieceTextTokenizer(Llama2cTokenizerFile.Read(path, vocabSize), addBos: true, path);

    /// <summary>A GGUF "llama" vocabulary as a SentencePiece model (llama.cpp's SPM tokenizer: no whitespace collapsing).</summary>
    internal static SentencePieceModel GgufSentencePiece(GgufVocabulary v, string sourcePath)
    {
        int n = v.Tokens.Length;
        CheckGguf(v, sourcePath);
        var kinds = new TokenKind[n];
        for (int i = 0; i < n; i++)
            kinds[i] = v.TokenTypes is { } types ? (TokenKind)types[i]
                : Llama2cTokenizerFile.IsBytePiece(v.Tokens[i]) ? TokenKind.Byte : TokenKind.Normal;
        int unknown = v.UnknownId ?? Math.Max(0, Array.IndexOf(kinds, TokenKind.Unknown));
        return new SentencePieceModel(v.Tokens, v.Scores ?? new float[n], kinds, SentencePieceAlgorithm.Bpe,
            unknown, v.BosId, v.EosId, v.AddSpacePrefix, RemoveExtraWhitespaces: false);
    }

    private static ByteLevelBpeTokenizer GgufByteLevelBpe(GgufVocabulary v, string sourcePath)
    {
        CheckGguf(v, sourcePath);
        if (v.Merges is null) throw ShrinkException.InFile(sourcePath, "gpt2 tokenizer has no tokenizer.ggml.merges");
        var merges = new List<(string, string)>(v.Merges.Length);
        foreach (string merge in v.Merges)
        {
            int space = merge.IndexOf(' ', 1); // a merge is "left right"; neither side holds a raw space in byte-level BPE
            if (space < 0) throw ShrinkException.InFile(sourcePath, $"malformed merge '{Formats.Gguf.GgufReader.Printable(merge)}'");
            merges.Add((merge[..space], merge[(space + 1)..]));
        }
        var tokens = new Dictionary<string, int>(v.Tokens.Length);
        var specials = new List<ByteLevelBpeTokenizer.SpecialToken>();
        for (int id = 0; id < v.Tokens.Length; id++)
        {
            var kind = v.TokenTypes is { } types ? (TokenKind)types[id] : TokenKind.Normal;
            if (kind is TokenKind.Control or TokenKind.UserDefined)
                specials.Add(new(v.Tokens[id], id, SkipWhenDecoding: kind == TokenKind.Control));
            else
                tokens.TryAdd(v.Tokens[id], id);
        }
        return new ByteLevelBpeTokenizer(tokens, merges, specials, PreTokenizerPatterns.ForGgufPre(v.Pre),
            ignoreMerges: v.Pre is "llama-bpe" or "llama3", addPrefixSpace: false, v.BosId, v.EosId, v.AddBos, v.Tokens.Length);
    }

    private static void CheckGguf(GgufVocabulary v, string sourcePath)
    {
        int n = v.Tokens.Length;
        if (n == 0) throw ShrinkException.InFile(sourcePath, "tokenizer.ggml.tokens is empty");
        if (v.Scores is { } s && s.Length != n) throw ShrinkException.InFile(sourcePath, $"{s.Length} token scores for {n} tokens");
        if (v.TokenTypes is { } t)
        {
            if (t.Length != n) throw ShrinkException.InFile(sourcePath, $"{t.Length} token types for {n} tokens");
            int bad = Array.FindIndex(t, type => type is < 1 or > 6);
            if (bad >= 0) throw ShrinkException.InFile(sourcePath, $"token {bad} has unknown token type {t[bad]}");
        }
        if ((uint)v.BosId >= (uint)n) throw ShrinkException.InFile(sourcePath, $"BOS id {v.BosId} outside the {n} tokens");
        if ((uint)v.EosId >= (uint)n) throw ShrinkException.InFile(sourcePath, $"EOS id {v.EosId} outside the {n} tokens");
        if (v.UnknownId is { } u && (uint)u >= (uint)n) throw ShrinkException.InFile(sourcePath, $"unknown-token id {u} outside the {n} tokens");
    }
}
