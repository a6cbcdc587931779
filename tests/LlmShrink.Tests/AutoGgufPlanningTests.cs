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

    /// <param name="embedding">llama.cpp's own type for token_embd in that mix, or "auto": the plan chooses it too.</param>
    [Theory]
    [InlineData("tinylit-Q4_K_M.gguf", "Q4_K")]
    [InlineData("tinylit-Q2_K.gguf", "auto")]
    public void IsCloserToTheOriginalThanLlamaCppsMixOfTheSameSize(string file, string embedding)
    {
        string theirs = Path.Combine(SharedData.Root, "models", "tinylit-8m-gguf", file);
        long size = new FileInfo(theirs).Length;
        using var dir = new TempDir();
        AutoSummary summary;
        lock (MeasureLock)
            summary = AutoCompressionJob.Run(new AutoRequest(SharedData.TinyLit, SharedData.Corpus("tinylit_calib.txt"), dir.File("planned"))
            {
                Format = PlanFormat.Gguf, TargetSize = size, EmbeddingType = embedding == "auto" ? null : Enum.Parse<TensorType>(embedding),
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
        string plan = File.ReadAllText(Path.Combine(dir.File("planned"), "plan.md"));
        Assert.Contains("| lm_head |", plan);
        // A planned embedding type is one of those measured, written as chosen, and plan.md lists every type's KL.
        var token = written.Weights.Get(TensorNames.Embedding);
        Assert.Equal(summary.Chosen.Embedding!.Stored, token.Type);
        if (embedding == "auto")
        {
            Assert.Equal(EmbeddingPlan.Types.Length, summary.Embeddings!.Count);
            Assert.Contains(summary.Chosen.Embedding, summary.Embeddings);
            Assert.Contains("## Token embeddings", plan);
            // Finer types round the table less: their measured KL falls with every step.
            Assert.True(summary.Embeddings.Zip(summary.Embeddings.Skip(1)).All(p => p.First.Kl > p.Second.Kl), string.Join(", ", summary.Embeddings));
        }
    }
}
