using LlmShrink.Tokenization;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>llama2.c's tokenizer.bin, written here from a small vocabulary.</summary>
public class TokenizerLlama2cTests
{
    // run.c's layout: <unk>, "\n<s>\n", "\n</s>\n", <0x00>..<0xFF> (ids 3..258), then the merged pieces, with ▁ stored as ' '.
    private static readonly (string Text, float Score)[] Vocabulary =
    [
        ("<unk>", 0), ("\n<s>\n", 0), ("\n</s>\n", 0),
        .. Enumerable.Range(0, 256).Select(b => ($"<0x{b:X2}>", 0f)),
        (" ", -10), ("a", -10), ("b", -10), // 259..261
        (" a", -1), ("ab", -3), (" ab", -2), // 262..264
    ];

    private static void Write(string path, (string Text, float Score)[] vocabulary, int? lengthOverride = null)
    {
        using var w = new BinaryWriter(File.Create(path));
        w.Write(8); // max_token_length
        foreach (var (text, score) in vocabulary)
        {
            byte[] bytes = System.Text.Encoding.UTF8.GetBytes(text);
            w.Write(score);
            w.Write(lengthOverride ?? bytes.Length);
            w.Write(bytes);
        }
    }

    [Theory]
    // "ab ab" = ▁ a b ▁ a b: best score first, leftmost on ties: ▁a (-1) at 0, ▁a (-1) at 3, then ▁ab (-2) twice.
    [InlineData("ab ab", new[] { 1, 264, 264 })]
    // "ba" = ▁ b a: no pair is a piece.
    [InlineData("ba", new[] { 1, 259, 261, 260 })]
    // é = C3 A9 is not a piece: byte fallback to ids 3 + 0xC3, 3 + 0xA9.
    [InlineData("é", new[] { 1, 259, 3 + 0xC3, 3 + 0xA9 })]
    public void Encodes_like_run_c(string text, int[] expected)
    {
        using var dir = new TempDir();
        Write(dir.File("tokenizer.bin"), Vocabulary);
        var tok = TokenizerFactory.FromLlama2cFile(dir.File("tokenizer.bin"), Vocabulary.Length);
        Assert.Equal(expected, tok.Encode(text, addBos: true));
        Assert.Equal(text, tok.Decode(expected));
        Assert.Equal((1, 2, 265), (tok.BosId, tok.EosId, tok.VocabSize));
    }

    [Fact]
    public void Round_trips_text_with_characters_outside_the_vocabulary()
    {
        using var dir = new TempDir();
        Write(dir.File("tokenizer.bin"), Vocabulary);
        var tok = TokenizerFactory.FromLlama2cFile(dir.File("tokenizer.bin"), Vocabulary.Length);
        foreach (string text in new[] { "ab  ba\nnew line 😀", " leading space", "Zürich €5" })
            Assert.Equal(text, tok.Decode(tok.Encode(text, addBos: true)));
    }

    [Fact]
    public void Corrupt_files_are_user_errors()
    {
        using var dir = new TempDir();
        string path = dir.File("tokenizer.bin");
        Write(path, Vocabulary);
        byte[] good = File.ReadAllBytes(path);

        File.WriteAllBytes(path, good[..(good.Length - 3)]); // truncated inside the last token
        Assert.Contains("tokenizer.bin", Assert.Throws<ShrinkException>(() => TokenizerFactory.FromLlama2cFile(path, Vocabulary.Length)).Message);

        Write(path, Vocabulary, lengthOverride: 1_000_000); // a length far beyond the file
        Assert.Throws<ShrinkException>(() => TokenizerFactory.FromLlama2cFile(path, Vocabulary.Length));

        File.WriteAllBytes(path, good);
        Assert.Throws<ShrinkException>(() => TokenizerFactory.FromLlama2cFile(path, int.MaxValue)); // more tokens than the file holds
    }
}
