using LlmShrink.Formats;
using LlmShrink.Model;
using LlmShrink.Planning;
using Xunit;
using Xunit.Abstractions;

namespace LlmShrink.Tests;

/// <summary>
/// <c>llmshrink auto --format gguf</c> on tinylit-8m against llama.cpp's own K-quant mixes of the same model (made with
/// its importance matrix from the same calibration text): at each file's byte size, the plan's GGUF is closer to the
/// original on the held-out text. One measurement (cached) serves both sizes.
/// </summary>
public class AutoGgufPlanningTests(ITestOutputHelper output)
{
    private static readonly Lazy<string> Cache = new(() => Directory.CreateTempSubdirectory("llmshrink-auto-gguf-").FullName);
    private static readonly object MeasureLock = new();

    /// <param name="embedding">llama.cpp's own type for token_embd in that mix (the plan does not choose it yet).</param>
    [Theory]
    [InlineData("tinylit-Q4_K_M.gguf", "Q4_K")]
    [InlineData("tinylit-Q2_K.gguf", "Q2_K")]
    public void IsCloserToTheOriginalThanLlamaCppsMixOfTheSameSize(string file, string embedding)
    {
        string theirs = Path.Combine(SharedData.Root, "models", "tinylit-8m-gguf", file);
        long size = new FileInfo(theirs).Length;
        using var dir = new TempDir();
        AutoSummary summary;
        lock (MeasureLock)
            summary = AutoCompressionJob.Run(new AutoRequest(SharedData.TinyLit, SharedData.Corpus("tinylit_calib.txt"), dir.File("planned"))
            {
                Format = PlanFormat.Gguf, TargetSize = size, EmbeddingType = Enum.Parse<TensorType>(embedding),
                CacheFolder = Cache.Value, Samples = 32, KlSamples = 4, Anchors = 3,
            });
        string ours = Path.Combine(dir.File("planned"), AutoCompressionJob.GgufFileName);
        Assert.Equal(summary.Chosen.TotalBytes, new FileInfo(ours).Length);
        Assert.True(summary.Chosen.TotalBytes <= size, $"{summary.Chosen.TotalBytes} bytes > llama.cpp's {size}");
        var (ourPpl, ourKl) = HeldOutScore.Of(ours);
        var (theirPpl, theirKl) = HeldOutScore.Of(theirs);
        output.WriteLine($"{file}: llama.cpp {size} bytes, ppl {theirPpl:F3}, KL {theirKl:E3}; plan {summary.Chosen.TotalBytes} bytes, ppl {ourPpl:F3}, KL {ourKl:E3}");
        Assert.True(ourKl < 0.85 * theirKl, $"{file}: plan KL {ourKl:E3} should beat llama.cpp's {theirKl:E3} by 15 %");
        // Every tensor of the plan is a block type llama.cpp reads; lm_head was planned like the block linears.
        using var written = ModelLoader.Load(ours);
        Assert.All(written.Weights.All.Where(t => t.Shape.Length == 2), t => Assert.True(TensorTypes.IsBlockQuantized(t.Type), $"{t.Name} is {t.Type}"));
        Assert.Contains("| lm_head |", File.ReadAllText(Path.Combine(dir.File("planned"), "plan.md")));
    }
}
