using LlmShrink.Cli;
using LlmShrink.Model;
using LlmShrink.Tokenization;
using LlmShrink.Training;
using Xunit;

namespace LlmShrink.Tests;

/// <summary><c>llmshrink train</c>: a tiny model from scratch with tinylit-8m's tokenizer.</summary>
public class TrainCommandTests
{
    private const string Config = """
        {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 4, "vocab_size": 4096, "max_position_embeddings": 64,
         "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": false, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2}
        """;

    /// <summary>A config.json with the tokenizer beside it, as --config expects by default.</summary>
    private static string WriteConfig(TempDir dir)
    {
        File.WriteAllText(dir.File("config.json"), Config);
        foreach (string file in new[] { "tokenizer.model", "tokenizer_config.json" })
            File.Copy(Path.Combine(SharedData.TinyLit, file), dir.File(file));
        return dir.File("config.json");
    }

    [Fact]
    public void Train_writes_the_model_the_training_loop_produces_bit_for_bit()
    {
        using var dir = new TempDir();
        string config = WriteConfig(dir), data = SharedData.Corpus("tinylit_calib.txt"), output = dir.File("trained");
        var (code, _, stderr) = CliTests.Run("train", "--config", config, "--data", data, "--steps", "4", "--batch", "2", "--seq-len", "16",
            "--lr", "1e-2", "--warmup", "1", "--seed", "3", "--out", output);
        Assert.True(code == 0, stderr);
        Assert.Contains("step 4/4", stderr);

        // The same run through the library: same initialization, same windows, same steps.
        var tokenizer = TokenizerFactory.FromFolder(dir.Path)!;
        var expected = Initialization.Random(HfConfig.Parse(config), 3);
        var losses = Pretraining.Run(expected, CalibrationTokens(data, tokenizer), tokenizer.BosId,
            new PretrainingOptions { Steps = 4, Batch = 2, SeqLen = 16, Lr = 1e-2f, Warmup = 1, Seed = 3 });
        Assert.Contains($"loss {losses[0]:F4} → {losses[^1]:F4}", stderr);
        // GPT-2 initialization makes the logits nearly equal (std 0.02 weights): the first loss is ln 4096 = 8.318 within 0.01.
        Assert.Equal(Math.Log(4096), losses[0], 0.01);

        using var written = HfModelLoader.Load(output);
        Assert.NotNull(written.Tokenizer);
        Assert.Equal(16, written.Config.HiddenSize);
        foreach (var p in expected.Parameters)
            Assert.Equal(p.Value, written.Weights.Get(p.Name).ToFloatArray());
    }

    private static int[] CalibrationTokens(string path, ITextTokenizer tokenizer) => Compression.CalibrationSet.Tokenize(path, tokenizer);

    [Fact]
    public void Bad_input_is_a_one_line_user_error_and_writes_nothing()
    {
        using var dir = new TempDir();
        string config = WriteConfig(dir), data = SharedData.Corpus("tinylit_calib.txt"), output = dir.File("trained");
        File.WriteAllText(dir.File("empty.txt"), "");
        CliTests.AssertUserError(CliTests.Run("train", "--config", config, "--data", data, "--steps", "0", "--out", output), "--steps");
        CliTests.AssertUserError(CliTests.Run("train", "--config", config, "--data", dir.File("empty.txt"), "--steps", "3", "--out", output), "0 tokens");
        CliTests.AssertUserError(CliTests.Run("train", "--config", config, "--data", data, "--steps", "3", "--tokenizer", dir.File("nowhere"), "--out", output), "tokenizer");
        Assert.False(Directory.Exists(output));
    }
}
