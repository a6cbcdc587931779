using System.Text.Json;
using LlmShrink.Tokenization;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>Hugging Face tokenizer.json folders built here from hand-made vocabularies.</summary>
public class TokenizerJsonTests
{
    internal static ITextTokenizer Load(TempDir dir, object tokenizerJson, object? tokenizerConfig = null)
    {
        File.WriteAllText(dir.File("tokenizer.json"), JsonSerializer.Serialize(tokenizerJson));
        if (tokenizerConfig is not null) File.WriteAllText(dir.File("tokenizer_config.json"), JsonSerializer.Serialize(tokenizerConfig));
        return TokenizerFactory.FromFolder(dir.Path)!;
    }

    /// <summary>Llama 3 layout: 256 byte tokens (id = byte), 256 "Ġt", 257 "he", 258 "Ġthe"; 259 &lt;|begin_of_text|&gt;, 260 &lt;|eot|&gt;.</summary>
    internal static object ByteLevelJson(bool mergesAsPairs) => new
    {
        added_tokens = new object[]
        {
            new { id = 259, content = "<|begin_of_text|>", special = true },
            new { id = 260, content = "<|eot|>", special = true },
        },
        normalizer = (object?)null,
        pre_tokenizer = new
        {
            type = "Sequence",
            pretokenizers = new object[]
            {
                new { type = "Split", pattern = new { Regex = PreTokenizerPatterns.Llama3.ToString() }, behavior = "Isolated", invert = false },
                new { type = "ByteLevel", add_prefix_space = false, trim_offsets = true, use_regex = false },
            },
        },
        post_processor = new
        {
            type = "TemplateProcessing",
            single = new object[] { new { SpecialToken = new { id = "<|begin_of_text|>", type_id = 0 } }, new { Sequence = new { id = "A", type_id = 0 } } },
            special_tokens = new Dictionary<string, object> { ["<|begin_of_text|>"] = new { id = "<|begin_of_text|>", ids = new[] { 259 }, tokens = new[] { "<|begin_of_text|>" } } },
        },
        decoder = new { type = "ByteLevel" },
        model = new
        {
            type = "BPE",
            vocab = Enumerable.Range(0, 256).ToDictionary(b => ByteToUnicode.Encode([(byte)b]), b => b)
                .Concat(new Dictionary<string, int> { ["Ġt"] = 256, ["he"] = 257, ["Ġthe"] = 258, ["<|begin_of_text|>"] = 259, ["<|eot|>"] = 260 }).ToDictionary(),
            merges = mergesAsPairs ? (object)new[] { new[] { "Ġ", "t" }, new[] { "h", "e" }, new[] { "Ġt", "he" } } : new[] { "Ġ t", "h e", "Ġt he" },
        },
    };

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Byte_level_bpe_merges_by_rank_and_takes_bos_from_the_template(bool mergesAsPairs)
    {
        using var dir = new TempDir();
        var tok = Load(dir, ByteLevelJson(mergesAsPairs));
        Assert.True(tok.AddBos);
        Assert.Equal(259, tok.BosId);
        // "the" → t (h e); " the" → (Ġ t) (h e) → (Ġt he); "!" is byte 0x21.
        Assert.Equal(new[] { 259, 't', 257, 258, '!' }, tok.Encode("the the!", addBos: true));
    }

    [Fact]
    public void Byte_level_special_tokens_match_whole_and_are_skipped_when_decoding()
    {
        using var dir = new TempDir();
        var tok = Load(dir, ByteLevelJson(false), new { eos_token = "<|eot|>" });
        Assert.Equal(260, tok.EosId);
        int[] ids = tok.Encode("a<|eot|> the", addBos: false);
        Assert.Equal(new[] { 'a', 260, 258 }, ids);
        Assert.Equal("a the", tok.Decode(ids));
    }

    [Theory]
    [InlineData("héllo wörld 😀🎉\n\n  tabs\tand\r\nnewlines ")]
    [InlineData("日本語, 12345 — it's")]
    public void Byte_level_round_trips_arbitrary_utf8(string text)
    {
        using var dir = new TempDir();
        var tok = Load(dir, ByteLevelJson(false));
        Assert.Equal(text, tok.Decode(tok.Encode(text, addBos: true)));
    }

    /// <summary>Llama 2 layout: &lt;unk&gt; &lt;s&gt; &lt;/s&gt;, &lt;0x00&gt;..&lt;0xFF&gt; (3..258), ▁ a b ▁a ab ▁ab (259..264).</summary>
    internal static object SentencePieceJson() => new
    {
        added_tokens = new object[]
        {
            new { id = 0, content = "<unk>", special = true },
            new { id = 1, content = "<s>", special = true },
            new { id = 2, content = "</s>", special = true },
        },
        normalizer = new
        {
            type = "Sequence",
            normalizers = new object[] { new { type = "Prepend", prepend = "▁" }, new { type = "Replace", pattern = new { String = " " }, content = "▁" } },
        },
        pre_tokenizer = (object?)null,
        decoder = new
        {
            type = "Sequence",
            decoders = new object[] { new { type = "Replace", pattern = new { String = "▁" }, content = " " }, new { type = "ByteFallback" }, new { type = "Fuse" }, new { type = "Strip", content = " ", start = 1, stop = 0 } },
        },
        model = new
        {
            type = "BPE",
            unk_token = "<unk>",
            byte_fallback = true,
            vocab = new Dictionary<string, int> { ["<unk>"] = 0, ["<s>"] = 1, ["</s>"] = 2 }
                .Concat(Enumerable.Range(0, 256).Select(b => KeyValuePair.Create($"<0x{b:X2}>", 3 + b)))
                .Concat(new Dictionary<string, int> { ["▁"] = 259, ["a"] = 260, ["b"] = 261, ["▁a"] = 262, ["ab"] = 263, ["▁ab"] = 264 }).ToDictionary(),
            merges = new[] { "▁ a", "a b", "▁a b" },
        },
    };

    [Theory]
    // ▁ a b ▁ a b: rank 0 (▁ a) everywhere → ▁a b ▁a b; rank 2 (▁a b) → ▁ab ▁ab.
    [InlineData("ab ab", new[] { 1, 264, 264 })]
    // ▁ b a: "▁ b" and "b a" are no merges; ▁ b a stay.
    [InlineData("ba", new[] { 1, 259, 261, 260 })]
    // ab: ▁ a b → (▁ a) → (▁a b): "a b" (rank 1) loses to "▁ a" (rank 0) which comes first.
    [InlineData("ab", new[] { 1, 264 })]
    // € = E2 82 AC is not a piece: byte fallback.
    [InlineData("€", new[] { 1, 259, 3 + 0xE2, 3 + 0x82, 3 + 0xAC })]
    public void SentencePiece_style_bpe_follows_merge_ranks_with_byte_fallback(string text, int[] expected)
    {
        using var dir = new TempDir();
        var tok = Load(dir, SentencePieceJson(), new { add_bos_token = true, bos_token = "<s>", eos_token = new { content = "</s>" } });
        Assert.Equal(expected, tok.Encode(text, addBos: true));
        Assert.Equal(text, tok.Decode(expected));
        Assert.Equal((1, 2, 265), (tok.BosId, tok.EosId, tok.VocabSize));
    }

    [Fact]
    public void SentencePiece_style_round_trips_arbitrary_utf8()
    {
        using var dir = new TempDir();
        var tok = Load(dir, SentencePieceJson());
        foreach (string text in new[] { "ab  ba\nnew line 😀", " leading", "Zürich €5\t" })
            Assert.Equal(text, tok.Decode(tok.Encode(text, addBos: true)));
    }

    [Theory]
    [InlineData("Unigram")]
    [InlineData("WordPiece")]
    public void Unsupported_model_types_name_the_file(string type)
    {
        using var dir = new TempDir();
        var e = Assert.Throws<ShrinkException>(() => Load(dir, new { model = new { type, vocab = new Dictionary<string, int>() } }));
        Assert.Contains("tokenizer.json", e.Message);
        Assert.Contains(type, e.Message);
    }

    [Fact]
    public void Malformed_json_is_a_user_error()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("tokenizer.json"), "{ \"model\": ");
        Assert.Contains("tokenizer.json", Assert.Throws<ShrinkException>(() => TokenizerFactory.FromFolder(dir.Path)).Message);
    }
}
