using LlmShrink.Formats.Gguf;
using LlmShrink.Model;
using LlmShrink.Tokenization;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>GGUF-embedded vocabularies: SentencePiece "llama" (stories260K) and byte-level "gpt2" (hand-made).</summary>
public class TokenizerGgufTests
{
    private static readonly ITextTokenizer Stories = TokenizerFactory.FromGguf(ReadStoriesVocabulary(), SharedData.Stories260K);

    [Theory]
    // ▁Once ▁upon ▁a ▁time = 403 407 261 378 in stories260K's tokenizer.ggml.tokens (looked up by piece text);
    // the second line's pieces come from the same Python transcription of run.c as in TokenizerSentencePieceTests.
    [InlineData("Once upon a time", new[] { 1, 403, 407, 261, 378 })]
    [InlineData("Lily saw a big dog.", new[] { 1, 317, 394, 261, 370, 400, 428, 426 })] // ▁Lily ▁saw ▁a ▁big ▁do g .
    public void Stories260K_encodes_like_llama_cpp(string text, int[] expected)
    {
        Assert.Equal(expected, Stories.Encode(text, addBos: true));
        Assert.Equal(512, Stories.VocabSize);
        Assert.True(Stories.AddBos);
    }

    [Fact]
    public void Stories260K_round_trips_the_validation_text()
    {
        foreach (string line in File.ReadLines(SharedData.Corpus("tinystories_val.txt")).Take(3000))
            Assert.Equal(line, Stories.Decode(Stories.Encode(line, addBos: true)));
    }

    [Fact]
    public void TinyLit_pieces_through_the_gguf_path_match_the_tokenizer_model_path()
    {
        string modelPath = Path.Combine(SharedData.TinyLit, "tokenizer.model");
        var model = SentencePieceModel.Read(File.ReadAllBytes(modelPath), modelPath);
        var vocabulary = new GgufVocabulary("llama", model.Pieces, model.Scores, [.. model.Kinds.Select(k => (int)k)], null,
            model.BosId, model.EosId, model.UnknownId, AddBos: true, AddSpacePrefix: true, Pre: null);
        var viaGguf = TokenizerFactory.FromGguf(vocabulary, "synthetic.gguf");
        var viaModel = TokenizerFactory.FromFolder(SharedData.TinyLit)!;
        foreach (string line in File.ReadLines(SharedData.Corpus("tinylit_eval.txt")))
            Assert.Equal(viaModel.Encode(line, true), viaGguf.Encode(line, true));
    }

    [Fact]
    public void Vocabulary_with_bos_outside_the_tokens_is_a_user_error()
    {
        var v = new GgufVocabulary("llama", ["<unk>", "a"], null, null, null, 5, 1, 0, true, true, null);
        var e = Assert.Throws<ShrinkException>(() => TokenizerFactory.FromGguf(v, "bad.gguf"));
        Assert.StartsWith("bad.gguf:", e.Message);
        Assert.Throws<ShrinkException>(() => TokenizerFactory.FromGguf(v with { Model = "t5", BosId = 0 }, "bad.gguf"));
    }

    /// <summary>
    /// 256 byte tokens (id = byte value, GPT-2 spelling), then 256 "Ġt", 257 "he", 258 "Ġthe", 259 "Ġcat" (no merge builds
    /// it), 260 "&lt;|bos|&gt;" (control), 261 "&lt;|tool|&gt;" (user-defined); merges "Ġ t", "h e", "Ġt he".
    /// </summary>
    private static GgufVocabulary HandMadeGpt2(string? pre)
    {
        var tokens = Enumerable.Range(0, 256).Select(b => ByteToUnicode.Encode([(byte)b])).Concat(["Ġt", "he", "Ġthe", "Ġcat", "<|bos|>", "<|tool|>"]).ToArray();
        var types = tokens.Select((_, i) => i == 260 ? (int)TokenKind.Control : i == 261 ? (int)TokenKind.UserDefined : (int)TokenKind.Normal).ToArray();
        return new GgufVocabulary("gpt2", tokens, null, types, ["Ġ t", "h e", "Ġt he"], 260, 260, null, AddBos: true, AddSpacePrefix: false, pre);
    }

    [Fact]
    public void Gpt2_vocabulary_merges_by_rank_within_words()
    {
        var tok = TokenizerFactory.FromGguf(HandMadeGpt2(null), "hand.gguf");
        // "the" → t h e → (h e) → t he; " the" → Ġ t h e → (Ġ t) (h e) → Ġt he → (Ġt he) → Ġthe; " cat" has no merges.
        Assert.Equal(new[] { 260, 't', 257, 258, 32, 'c', 'a', 't' }, tok.Encode("the the cat", addBos: true));
        Assert.Equal("the the cat", tok.Decode(tok.Encode("the the cat", addBos: true)));
    }

    [Fact]
    public void Llama3_pre_tokenizer_takes_whole_words_from_the_vocabulary()
    {
        var tok = TokenizerFactory.FromGguf(HandMadeGpt2("llama-bpe"), "hand.gguf");
        Assert.Equal(new[] { 259 }, tok.Encode(" cat", addBos: false)); // ignore_merges: "Ġcat" is a token as a whole
    }

    [Fact]
    public void Pre_tokenizer_patterns_cut_digits_per_model()
    {
        Assert.Equal(["x", " 12345"], PreTokenizerPatterns.Split("x 12345", [PreTokenizerPatterns.Gpt2]));
        Assert.Equal(["x", " ", "123", "45"], PreTokenizerPatterns.Split("x 12345", [PreTokenizerPatterns.Llama3]));
        Assert.Equal(["x", " ", "1", "2", "3", "4", "5"], PreTokenizerPatterns.Split("x 12345", [PreTokenizerPatterns.Qwen2]));
        Assert.Equal(["Hello", ",", " world", "\n\n", "it", "'s"], PreTokenizerPatterns.Split("Hello, world\n\nit's", [PreTokenizerPatterns.Llama3]));
    }

    [Fact]
    public void Gpt2_special_tokens_match_whole_and_control_tokens_are_not_decoded()
    {
        var tok = TokenizerFactory.FromGguf(HandMadeGpt2(null), "hand.gguf");
        int[] ids = tok.Encode("a<|bos|>b<|tool|>", addBos: false);
        Assert.Equal(new[] { 'a', 260, 'b', 261 }, ids);
        Assert.Equal("ab<|tool|>", tok.Decode(ids));
    }

    [Theory]
    [InlineData("héllo wörld 😀🎉\n\n  tabs\tand\r\nnewlines ")]
    [InlineData("日本語のテキスト, 123 456 — 'quoted' it's")]
    public void Gpt2_round_trips_arbitrary_utf8(string text)
    {
        foreach (string? pre in new[] { null, "llama-bpe", "qwen2" })
        {
            var tok = TokenizerFactory.FromGguf(HandMadeGpt2(pre), "hand.gguf");
            Assert.Equal(text, tok.Decode(tok.Encode(text, addBos: true)));
        }
    }

    private static GgufVocabulary ReadStoriesVocabulary()
    {
        using var gguf = GgufFile.Open(SharedData.Stories260K);
        return GgufModelLoader.ReadVocabulary(gguf)!;
    }
}
