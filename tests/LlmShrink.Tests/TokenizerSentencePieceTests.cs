using LlmShrink.Tokenization;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>tinylit-8m's tokenizer.model (SentencePiece BPE, 4096 pieces, byte fallback) through <see cref="TokenizerFactory.FromFolder"/>.</summary>
public class TokenizerSentencePieceTests
{
    private static readonly ITextTokenizer TinyLit = TokenizerFactory.FromFolder(SharedData.TinyLit)!;

    // Expected ids derived independently: the pieces come from a Python transcription of llama2.c's run.c encoder
    // (dummy ▁ prefix, repeatedly merge the adjacent pair whose joined piece has the best score, byte fallback) over
    // the piece list parsed from tokenizer.model; the ids are those pieces' positions in that list.
    [Theory]
    [InlineData("Once upon a time", new[] { 1, 1004, 315, 1302, 261, 609 })]                                  // ▁On ce ▁upon ▁a ▁time
    [InlineData("The old man said, \"Hello!\"", new[] { 1, 377, 666, 482, 373, 4007, 364, 4023, 429, 3992, 878 })] // ▁The ▁old ▁man ▁said , ▁" H ell o !"
    [InlineData("price: 5 €", new[] { 1, 1788, 315, 4050, 3988, 4072, 3988, 229, 133, 175 })]                 // ▁pri ce : ▁ 5 ▁ <0xE2> <0x82> <0xAC>
    [InlineData("  two spaces\nnew line", new[] { 1, 901, 803, 560, 1269, 13, 651, 4002, 2370 })]             // ▁▁ ▁two ▁sp aces <0x0A> ne w ▁line
    public void Encodes_fixed_strings_to_the_reference_ids(string text, int[] expected)
    {
        Assert.Equal(expected, TinyLit.Encode(text, addBos: true));
        Assert.Equal(text, TinyLit.Decode(expected));
    }

    [Fact]
    public void Emoji_falls_back_to_its_utf8_bytes()
    {
        // 😀 = F0 9F 98 80; byte piece <0xXX> sits at id 3 + XX in this model.
        Assert.Equal(new[] { 3988, 0xF0 + 3, 0x9F + 3, 0x98 + 3, 0x80 + 3 }, TinyLit.Encode("😀", addBos: false));
    }

    [Fact]
    public void Folder_settings_come_from_the_model_and_tokenizer_config()
    {
        Assert.Equal(4096, TinyLit.VocabSize);
        Assert.Equal(1, TinyLit.BosId);
        Assert.Equal(2, TinyLit.EosId);
        Assert.True(TinyLit.AddBos);
        Assert.Equal(new[] { 1 }, TinyLit.Encode("", addBos: true));
        Assert.Equal("Once", TinyLit.Decode([1, 1004, 315, 2])); // BOS/EOS omitted, dummy-prefix space dropped
    }

    [Fact]
    public void Round_trips_every_line_of_the_corpora()
    {
        var lines = File.ReadLines(SharedData.Corpus("tinylit_eval.txt"))
            .Concat(File.ReadLines(SharedData.Corpus("tinyshakespeare.txt")).Take(200))
            .Concat(File.ReadLines(SharedData.Corpus("sotu.txt")).Take(200));
        foreach (string line in lines)
            Assert.Equal(line, TinyLit.Decode(TinyLit.Encode(line, addBos: true)));
    }

    [Fact]
    public void Streaming_decode_emits_whole_characters_only()
    {
        var decoder = new LlmShrink.Evaluation.StreamingDecoder(TinyLit, []);
        int[] ids = [1, 1788, 315, 4050, 3988, 4072, 3988, 229, 133, 175]; // "price: 5 €", € as three byte pieces
        var pieces = ids.Select(decoder.Append).ToList();
        Assert.Equal(new[] { "", "pri", "ce", ":", " ", "5", " ", "", "", "€" }, pieces);
        Assert.Equal("", decoder.Finish());
    }

    [Fact]
    public void Folder_without_tokenizer_gives_null()
    {
        using var dir = new TempDir();
        Assert.Null(TokenizerFactory.FromFolder(dir.Path));
    }

    [Fact]
    public void Truncated_model_file_is_a_user_error()
    {
        using var dir = new TempDir();
        byte[] bytes = File.ReadAllBytes(Path.Combine(SharedData.TinyLit, "tokenizer.model"));
        File.WriteAllBytes(dir.File("tokenizer.model"), bytes[..(bytes.Length / 2)]);
        var e = Assert.Throws<ShrinkException>(() => TokenizerFactory.FromFolder(dir.Path));
        Assert.Contains("tokenizer.model", e.Message);
    }

    [Fact]
    public void Add_bos_token_false_in_tokenizer_config_is_honoured()
    {
        using var dir = new TempDir();
        File.Copy(Path.Combine(SharedData.TinyLit, "tokenizer.model"), dir.File("tokenizer.model"));
        File.WriteAllText(dir.File("tokenizer_config.json"), """{ "add_bos_token": false }""");
        Assert.False(TokenizerFactory.FromFolder(dir.Path)!.AddBos);
    }
}
