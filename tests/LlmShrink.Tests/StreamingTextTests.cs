using System.Text;
using System.Text.Json;
using LlmShrink.Evaluation;
using LlmShrink.Formats;
using LlmShrink.Model;
using LlmShrink.Tokenization;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>Text inputs read piece by piece: the tokens equal the whole text's, and non-text files are refused at once.</summary>
public class StreamingTextTests
{
    private static int[] Streamed(ITextTokenizer tokenizer, string text, int blockChars)
    {
        var encoder = new StreamingEncoder(tokenizer, new StringReader(text), tokenizer.AddBos, blockChars);
        var tokens = new List<int>();
        while (encoder.Next() is { } piece) tokens.AddRange(piece);
        return [.. tokens];
    }

    public static TheoryData<string, string> Vocabularies => new()
    {
        { "tinylit-8m (tokenizer.model)", "tinylit_eval.txt" },
        { "tinylit-8m (tokenizer.model)", "sotu.txt" },
        { "stories260K (GGUF llama vocabulary)", "tinystories_val.txt" },
        { "stories260K (GGUF llama vocabulary)", "tinyshakespeare.txt" },
    };

    /// <summary>Small blocks put a cut every few hundred characters: thousands of cuts per corpus.</summary>
    [Theory]
    [MemberData(nameof(Vocabularies))]
    public void SentencePiece_streamed_in_small_blocks_gives_the_tokens_of_the_whole_text(string vocabulary, string corpus)
    {
        using var model = ModelLoader.Load(vocabulary.StartsWith("tinylit") ? SharedData.TinyLit : SharedData.Stories260K);
        var tokenizer = model.RequireTokenizer();
        string text = File.ReadAllText(SharedData.Corpus(corpus))[..200_000];
        Assert.Equal(tokenizer.Encode(text, tokenizer.AddBos), Streamed(tokenizer, text, blockChars: 389));
    }

    [Theory]
    [InlineData("The quick brown fox, the lazy dog. Then: the 123 thes  the\n\nthe\tthe 'the' t h e the")]
    [InlineData("x")]
    [InlineData("")]
    [InlineData("    leading spaces then words and   runs   of spaces ")]
    public void Byte_level_bpe_streamed_gives_the_tokens_of_the_whole_text(string sample)
    {
        using var dir = new TempDir();
        var tokenizer = TokenizerJsonTests.Load(dir, TokenizerJsonTests.ByteLevelJson(mergesAsPairs: true));
        string text = string.Concat(Enumerable.Repeat(sample, 40));
        foreach (int block in new[] { 2, 7, 64 })
            Assert.Equal(tokenizer.Encode(text, addBos: true), Streamed(tokenizer, text, block));
    }

    [Fact]
    public void A_text_without_cut_points_is_encoded_whole_at_the_end()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        var tokenizer = model.RequireTokenizer();
        string text = new string('a', 5000);
        Assert.Equal(tokenizer.Encode(text, true), Streamed(tokenizer, text, blockChars: 100));
    }

    [Fact]
    public void Streamed_evaluation_scores_the_same_windows_as_the_whole_token_array()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        var tokenizer = model.RequireTokenizer();
        string path = SharedData.Corpus("tinystories_val.txt");
        using var transformer = new Transformer(model, 1);
        var tokens = tokenizer.Encode(File.ReadAllText(path), tokenizer.AddBos);
        var whole = Perplexity.Evaluate(tokens, 64, PerplexityProtocol.LlamaCpp, tokenizer.BosId, new TransformerLogitModel(transformer, 64), maxWindows: 10);
        var streamed = TextEvaluation.Run(path, tokenizer, 64, PerplexityProtocol.LlamaCpp, tokenizer.BosId, new TransformerLogitModel(transformer, 64), maxWindows: 10);
        Assert.Equal(whole.MeanNll, streamed.Result.MeanNll);
        Assert.Equal(whole.ScoredPositions, streamed.Result.ScoredPositions);
        Assert.Equal(tokens.Length, streamed.Tokens); // the whole file is tokenized, whatever the window limit
    }

    [Fact]
    public void A_binary_file_is_refused_by_its_first_NUL()
    {
        using var dir = new TempDir();
        string path = dir.File("model.safetensors");
        File.WriteAllBytes(path, [8, 0, 0, 0, 0, 0, 0, 0, (byte)'{', (byte)'}']);
        var e = Assert.Throws<ShrinkException>(() => TextFile.EnsureText(path, "evaluation text"));
        Assert.Equal($"{path}: is a binary file, not evaluation text (NUL byte at offset 1)", e.Message);
    }

    [Fact]
    public void Utf16_text_is_not_utf8_text()
    {
        using var dir = new TempDir();
        string path = dir.File("utf16.txt");
        File.WriteAllText(path, "Hello", Encoding.Unicode);
        var e = Assert.Throws<ShrinkException>(() => TextFile.ReadAll(path, "calibration text"));
        Assert.Equal($"{path}: is UTF-16 text; calibration text must be UTF-8 (convert it, e.g. iconv -f UTF-16 -t UTF-8)", e.Message);
    }

    [Fact]
    public void Latin1_text_is_not_utf8_text()
    {
        using var dir = new TempDir();
        string path = dir.File("latin1.txt");
        File.WriteAllBytes(path, [(byte)'c', (byte)'a', (byte)'f', 0xE9, (byte)' ', (byte)'!']); // "café !" in ISO-8859-1
        var e = Assert.Throws<ShrinkException>(() => TextFile.EnsureText(path, "calibration text"));
        Assert.Equal($"{path}: is not UTF-8 text, so it cannot be calibration text (invalid byte 0xE9 at offset 3)", e.Message);
    }

    [Fact]
    public void A_character_cut_by_the_sniffed_prefix_is_fine_and_a_bad_byte_after_it_is_refused_when_read()
    {
        using var dir = new TempDir();
        string path = dir.File("long.txt");
        // "é" (C3 A9) straddles the 64 KiB boundary; a lone continuation byte sits far beyond it.
        var bytes = Enumerable.Repeat((byte)'a', (64 << 10) - 1).Concat(new byte[] { 0xC3, 0xA9 }).Concat(Enumerable.Repeat((byte)'b', 100_000)).ToArray();
        File.WriteAllBytes(path, bytes);
        TextFile.EnsureText(path, "evaluation text");
        Assert.Equal(bytes.Length - 1, TextFile.ReadAll(path, "evaluation text").Length);

        bytes[^10] = 0x80;
        File.WriteAllBytes(path, bytes);
        TextFile.EnsureText(path, "evaluation text"); // the start is still text
        var e = Assert.Throws<ShrinkException>(() => TextFile.ReadAll(path, "evaluation text"));
        Assert.Equal($"{path}: is not UTF-8 text throughout, so it cannot be evaluation text", e.Message);
    }

    /// <summary>
    /// The data file is checked before any model is loaded: a model that does not even exist is not reached. (The issue
    /// asks for "under a second"; this asserts the order that makes it so, instead of a timing.)
    /// </summary>
    [Fact]
    public void Eval_refuses_a_binary_data_file_before_loading_the_model()
    {
        using var dir = new TempDir();
        string missingModel = dir.File("no-such-model.gguf");
        string weights = Path.Combine(SharedData.TinyLit, "model.safetensors");
        var result = CliTests.Run("eval", missingModel, "--data", weights, "--ctx", "64");
        CliTests.AssertUserError(result, $"{weights}: is a binary file, not evaluation text");
    }

    [Fact]
    public void Compress_refuses_a_binary_calibration_file_before_loading_the_model()
    {
        using var dir = new TempDir();
        string weights = Path.Combine(SharedData.TinyLit, "model.safetensors");
        var result = CliTests.Run("compress", dir.File("no-such-model"), "--recipe", "w4g128-rtn", "--calib", weights, "--out", dir.File("out"));
        CliTests.AssertUserError(result, $"{weights}: is a binary file, not calibration text");
    }

    /// <summary>
    /// A separate process each, so the peak working set is the evaluation's own: a 50 MB text takes no more memory than
    /// a 1 MB one (the windows are scored as the text streams by; the whole file is tokenized in both runs). The
    /// children collect garbage without the background collector, so the peak measures what the evaluation holds.
    /// </summary>
    [Fact]
    public void Eval_peak_memory_does_not_grow_with_the_length_of_the_text()
    {
        using var dir = new TempDir();
        string corpus = File.ReadAllText(SharedData.Corpus("tinyshakespeare.txt"));
        long Peak(int megabytes)
        {
            string path = dir.File($"{megabytes}mb.txt");
            using (var writer = new StreamWriter(path))
                for (long written = 0; written < megabytes * 1_000_000L; written += corpus.Length) writer.Write(corpus);
            var start = CliProcess.StartInfo("eval", SharedData.Stories260K, "--data", path, "--ctx", "128", "--max-chunks", "4", "--threads", "1", "--json");
            // Collections on the allocating thread: the background collector, starved of CPU on a loaded CI host, let
            // the 50 MB run's garbage reach 92 MB once (quiet: 73–78 MB concurrent, 71–72 MB not, 1 MB run 71–75 MB).
            start.Environment["DOTNET_gcConcurrent"] = "0";
            var (code, stdout, stderr) = CliProcess.Run(start);
            Assert.True(code == 0, stderr);
            using var json = JsonDocument.Parse(stdout);
            Assert.True(json.RootElement.GetProperty("tokens").GetInt64() > megabytes * 200_000L); // the whole file was read
            return json.RootElement.GetProperty("peak_memory_bytes").GetInt64();
        }
        long small = Peak(1), large = Peak(50);
        Assert.True(large <= 1.2 * small, $"peak {large:N0} B on 50 MB against {small:N0} B on 1 MB");
    }
}
