using LlmShrink.Compression;
using LlmShrink.Export;
using LlmShrink.Model;
using LlmShrink.Planning;
using Xunit;
using Xunit.Abstractions;

namespace LlmShrink.Tests;

/// <summary>
/// <c>llmshrink auto</c> on tinylit-8m: at the size of each uniform GPTQ preset the plan beats it on the held-out text,
/// <c>--max-kl</c> is met, the plan re-applied by <c>compress</c> writes the same bytes, and bad budgets are one-line errors.
/// One measurement (cached) serves every plan here.
/// </summary>
public class AutoPlanningTests(ITestOutputHelper output)
{
    /// <summary>GPTQ at every width and group the GPTQ layout stores, symmetric or not, and keep.</summary>
    private const string Menu = """
        candidates:
          - keep
          - method: gptq
            bits: [2, 3, 4, 8]
            group_size: [32, 64, 128]
            symmetric: [true, false]
        """;

    private static readonly Lazy<string> Workspace = new(() =>
    {
        string root = Directory.CreateTempSubdirectory("llmshrink-auto-").FullName;
        File.WriteAllText(Path.Combine(root, "menu.yaml"), Menu);
        return root;
    });

    private static string MenuFile => Path.Combine(Workspace.Value, "menu.yaml");
    private static string Cache => Path.Combine(Workspace.Value, "cache");

    private static AutoRequest Request(string output) => new(SharedData.TinyLit, SharedData.Corpus("tinylit_calib.txt"), output)
    {
        CandidatesFile = MenuFile, CacheFolder = Cache, KlSamples = 4, Anchors = 3, Samples = Samples,
    };

    /// <summary>Calibration samples of 256 tokens for plans and presets alike (half the default, to keep the suite short).</summary>
    private const int Samples = 64;

    /// <summary>Measurement is the slow part: tests share it through the cache, measured once under a lock.</summary>
    private static readonly object MeasureLock = new();

    private static AutoSummary Plan(AutoRequest request)
    {
        lock (MeasureLock) return AutoCompressionJob.Run(request);
    }

    private static long WrittenBytes(string folder) =>
        Directory.EnumerateFiles(folder, "*.safetensors").Where(f => Path.GetFileName(f) != CompressedCheckpointWriter.ImportanceFile).Sum(f => new FileInfo(f).Length);

    [Theory]
    [InlineData("w4g128-gptq")]
    [InlineData("w3g128-gptq")]
    [InlineData("w2g64-gptq")]
    public void BeatsTheUniformPresetAtItsSize(string preset)
    {
        using var dir = new TempDir();
        string uniform = dir.File("uniform"), planned = dir.File("planned");
        CompressionJob.Run(new CompressionRequest(SharedData.TinyLit, preset, SharedData.Corpus("tinylit_calib.txt"), Samples, 256, 0, uniform));
        long size = WrittenBytes(uniform);
        var summary = Plan(Request(planned) with { TargetSize = size });
        Assert.Equal(summary.Chosen.TotalBytes, WrittenBytes(planned));
        var (presetPpl, presetKl) = HeldOutScore.Of(uniform);
        var (planPpl, planKl) = HeldOutScore.Of(planned);
        output.WriteLine($"{preset}: {size} bytes, ppl {presetPpl:F3}, KL {presetKl:E3}; plan {summary.Chosen.TotalBytes} bytes, ppl {planPpl:F3}, " +
            $"KL {planKl:E3} (held-back: predicted {summary.Chosen.Selection.Loss:E3}, measured {summary.Chosen.MeasuredKl:E3})");
        Assert.True(summary.Chosen.TotalBytes <= size, $"plan {summary.Chosen.TotalBytes} bytes > {preset} {size}");
        Assert.True(planKl < 0.8 * presetKl, $"{preset}: plan KL {planKl:E3} should beat {presetKl:E3} by a fifth");
        // The plan minimises KL, the sharper measure; perplexity follows it at 3 and 2 bits, where the gap is large. At 4
        // bits both sit within 0.4 % of the float perplexity, a band where perplexity ranks rounding styles, not fidelity:
        // asymmetric rounding (which the plan prefers: its KL is lower) costs tinylit perplexity that KL does not show —
        // uniform asymmetric w4g128 GPTQ has KL 1.76e-3 against the symmetric preset's 2.15e-3 on the whole held-out text
        // but perplexity 73.87 against 73.68 (float 73.54), and likewise on tinyshakespeare (420.95 vs 418.46, float
        // 420.11) and sotu (174.96 vs 174.52, float 174.48). A menu of symmetric candidates only does no better (measured:
        // 4 bits +0.05 % perplexity, 3 bits +0.19 %). So at 4 bits the plan may lose at most 0.3 % perplexity.
        double allowed = preset.StartsWith("w4", StringComparison.Ordinal) ? presetPpl * 1.003 : presetPpl;
        Assert.True(planPpl < allowed, $"{preset}: plan perplexity {planPpl:F3} should beat {presetPpl:F3}");
    }

    [Fact]
    public void MaxKlIsMetAndTheSmallestSuchPlanIsKept()
    {
        using var dir = new TempDir();
        const double maxKl = 4e-3;
        var summary = Plan(Request(dir.File("planned")) with { MaxKl = maxKl });
        output.WriteLine(string.Join("; ", summary.Attempts.Select(a => $"{a.TotalBytes} bytes: predicted {a.Selection.Loss:E3}, measured {a.MeasuredKl:E3}")));
        Assert.True(summary.Chosen.MeasuredKl <= maxKl, $"measured {summary.Chosen.MeasuredKl:E3} > {maxKl}");
        // Among the written plans that met it, the smallest is kept; the plan is well below 4-bit size at this KL.
        Assert.Equal(summary.Attempts.Where(a => a.MeasuredKl <= maxKl).Min(a => a.TotalBytes), summary.Chosen.TotalBytes);
        Assert.InRange(summary.BitsPerWeight, 2.5, 4.3);
    }

    /// <summary>The plan's recipe.yaml given to compress with the same calibration writes the same files, byte for byte.</summary>
    [Fact]
    public void CompressReappliesThePlanExactly()
    {
        using var dir = new TempDir();
        string planned = dir.File("planned"), again = dir.File("again");
        Plan(Request(planned) with { TargetBitsPerWeight = 3.5 });
        CompressionJob.Run(new CompressionRequest(SharedData.TinyLit, Path.Combine(planned, "recipe.yaml"), SharedData.Corpus("tinylit_calib.txt"), Samples, 256, 0, again));
        var files = Directory.EnumerateFiles(planned, "*.safetensors").Select(Path.GetFileName).Order().ToList();
        Assert.Equal(files, Directory.EnumerateFiles(again, "*.safetensors").Select(Path.GetFileName).Order());
        foreach (var f in files) Assert.True(File.ReadAllBytes(Path.Combine(planned, f!)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(again, f!))), $"{f} differs");
        Assert.Contains("# LlmShrink automatic plan", File.ReadAllText(Path.Combine(planned, "plan.md")));
        Assert.Equal(0x89, File.ReadAllBytes(Path.Combine(planned, "pareto.png"))[0]); // the chart plan.md shows
    }

    [Theory]
    [InlineData("--target-bpw", "1.5", "below the smallest plan")]
    [InlineData("--target-size", "999999999", "at or above keeping every layer")]
    [InlineData("--target-size", "1000", "below the smallest plan")]
    public void BudgetsOutsideTheMenuAreOneLineErrors(string option, string value, string problem)
    {
        using var dir = new TempDir();
        lock (MeasureLock)
            CliTests.AssertUserError(CliTests.Run("auto", SharedData.TinyLit, "--calib", SharedData.Corpus("tinylit_calib.txt"), option, value,
                "--candidates", MenuFile, "--cache", Cache, "--kl-samples", "4", "--anchors", "3", "--samples", $"{Samples}", "--out", dir.File("out")), problem);
        Assert.False(Directory.Exists(dir.File("out")));
    }

    [Theory]
    [InlineData(new[] { "--target-bpw", "4", "--max-kl", "0.01" }, "contradict")]
    [InlineData(new string[0], "give one budget")]
    [InlineData(new[] { "--max-kl", "0" }, "--max-kl: must be a positive number")]
    [InlineData(new[] { "--min-tokens-per-s", "10", "--target-bpw", "4" }, "--min-tokens-per-s: give it alone")]
    [InlineData(new[] { "--min-tokens-per-s", "0" }, "--min-tokens-per-s: must be a positive number")]
    [InlineData(new[] { "--min-tokens-per-s", "-5" }, "--min-tokens-per-s: must be a positive number")]
    [InlineData(new[] { "--format", "gguf", "--target-bpw", "4", "--embedding-type", "auto" }, "--embedding-type auto: plans the embeddings of a GGUF file under --target-size or --max-kl")]
    [InlineData(new[] { "--target-size", "9000000", "--embedding-type", "auto" }, "--embedding-type auto: plans the embeddings of a GGUF file")]
    [InlineData(new[] { "--format", "gguf", "--target-size", "9000000", "--embedding-type", "Q9_K" }, "--embedding-type Q9_K: not 'auto' or a GGUF export type")]
    public void ContradictoryOrMissingBudgetsAreOneLineErrors(string[] budget, string problem)
    {
        using var dir = new TempDir();
        CliTests.AssertUserError(CliTests.Run(["auto", SharedData.TinyLit, "--calib", SharedData.Corpus("tinylit_calib.txt"), .. budget, "--out", dir.File("out")]), problem);
    }

    [Fact]
    public void AnEmptyMenuIsAOneLineError()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("menu.yaml"), "candidates: []\n");
        CliTests.AssertUserError(CliTests.Run("auto", SharedData.TinyLit, "--calib", SharedData.Corpus("tinylit_calib.txt"), "--target-bpw", "4",
            "--candidates", dir.File("menu.yaml"), "--out", dir.File("out")), "menu.yaml: line 1, column 1: the candidate list is empty");
    }
}
