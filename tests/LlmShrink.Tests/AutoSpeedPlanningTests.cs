using System.Text.Json;
using LlmShrink.Formats;
using LlmShrink.Model.Synthesis;
using LlmShrink.Planning;
using Xunit;
using Xunit.Abstractions;

namespace LlmShrink.Tests;

/// <summary>
/// <c>llmshrink auto --min-tokens-per-s</c>. On a small random model with a decode clock that charges a nanosecond per
/// weight byte (<see cref="BytesDecodeClock"/>), the plan is the least-KL plan within the time budget — brute force over
/// the menu agrees — and a looser target loses no more. On tinylit-8m with this machine's own clock, the CLI writes a
/// plan that met a target well below the model's speed; no timing is asserted, only that the job says it met it.
/// </summary>
public class AutoSpeedPlanningTests(ITestOutputHelper output)
{
    /// <summary>Time the rest of the model takes per token under the byte clock (about its 2-bit layers' time).</summary>
    private const double FixedSeconds = 3e-4;

    private const string RtnMenu = """
        candidates:
          - method: rtn
            bits: [2, 4, 8]
            granularity: channel
        """;

    private static readonly Lazy<string> Workspace = new(() =>
    {
        string root = Directory.CreateTempSubdirectory("llmshrink-auto-speed-").FullName;
        // Rows of 256 inputs or more: narrower ones pad 2, 4 and 8-bit codes to the same 64-byte blocks, and cost the same time.
        var config = SyntheticModel.Config() with { HiddenSize = 256, IntermediateSize = 512, HeadDim = 32, NumHeads = 8, VocabSize = 96 };
        RandomModel.Write(Path.Combine(root, "model"), config, TensorType.F32, seed: 5);
        File.WriteAllText(Path.Combine(root, "rtn.yaml"), RtnMenu);
        File.WriteAllText(Path.Combine(root, "keep.yaml"), "candidates:\n  - keep\n  - method: rtn\n    bits: 4\n    granularity: channel\n");
        return root;
    });

    private static readonly object MeasureLock = new();

    private static AutoSummary Plan(string output, string menu, double? minTokensPerSecond = null, double? bitsPerWeight = null)
    {
        string root = Workspace.Value;
        var request = new AutoRequest(Path.Combine(root, "model"), "random", output)
        {
            MinTokensPerSecond = minTokensPerSecond, TargetBitsPerWeight = bitsPerWeight, TimeLayers = true,
            CandidatesFile = Path.Combine(root, menu), CacheFolder = Path.Combine(root, "cache"),
            Samples = 8, SequenceLength = 32, KlSamples = 2, Anchors = 2,
        };
        lock (MeasureLock) return AutoCompressionJob.Run(request, decodeClock: new BytesDecodeClock(FixedSeconds));
    }

    /// <summary>Every plan of the table: (nanoseconds, predicted KL), one candidate per group.</summary>
    private static List<(long Nanoseconds, double Loss)> AllPlans(MeasurementTable table)
    {
        var plans = new List<(long, double)> { (0, 0) };
        for (int g = 0; g < table.Groups.Count; g++)
        {
            var row = table.Entries[g];
            var loss = table.PredictedKl(g);
            plans = [.. plans.SelectMany(p => row.Select((m, c) => (p.Item1 + DecodeTiming.Nanoseconds(m.Seconds!.Value), p.Item2 + loss[c])))];
        }
        return plans;
    }

    /// <summary>The speed of every group on its fastest, or on its slowest, candidate.</summary>
    private static double Speed(MeasurementTable table, Func<IEnumerable<double>, double> pick) =>
        table.Decode!.PredictedTokensPerSecond(table.Entries.Sum(row => pick(row.Select(m => m.Seconds!.Value))));

    [Fact]
    public void TheTimeBudgetGetsTheLeastKlPlanWithinItAndALooserOneNoWorse()
    {
        using var dir = new TempDir();
        var table = Plan(dir.File("sized"), "rtn.yaml", bitsPerWeight: 5).Table; // measures (and caches) the table
        double fastest = Speed(table, t => t.Min()), slowest = Speed(table, t => t.Max());
        Assert.True(fastest > 1.2 * slowest, $"fastest {fastest:F1} vs slowest {slowest:F1} tokens/s: the menu should trade time");
        var plans = AllPlans(table);

        double? previousKl = null;
        foreach (double fraction in new[] { 0.7, 0.3 }) // the tighter target first
        {
            double target = slowest + fraction * (fastest - slowest);
            var summary = Plan(dir.File($"fast-{fraction}"), "rtn.yaml", minTokensPerSecond: target);
            Assert.True(summary.FromCache);
            var chosen = summary.Chosen;
            long budget = (long)Math.Floor(table.Decode!.PlannedBudget(target) * 1e9);
            long time = chosen.Selection.Choices.Select((c, g) => DecodeTiming.Nanoseconds(table.Entries[g][c].Seconds!.Value)).Sum();
            output.WriteLine($"target {target:F1} tokens/s (fastest {fastest:F1}, slowest {slowest:F1}): {time} of {budget} ns, predicted KL {chosen.Selection.Loss:E4}, " +
                $"predicted {chosen.PredictedTokensPerSecond:F2}, measured {chosen.MeasuredTokensPerSecond:F2} tokens/s");
            Assert.True(time <= budget, $"{time} ns > budget {budget} ns");
            Assert.True(chosen.PredictedTokensPerSecond!.Value >= target);
            Assert.Equal(plans.Where(p => p.Nanoseconds <= budget).Min(p => p.Loss), chosen.Selection.Loss, 12);
            // The byte clock makes the written model exactly as fast as predicted: its layers are the trials' layers,
            // and the fixed part (lm_head included) is read off the float model. So the first plan meets the target.
            Assert.Equal(chosen.PredictedTokensPerSecond!.Value, chosen.MeasuredTokensPerSecond, 6);
            Assert.True(chosen.MeetsBudget);
            Assert.Single(summary.Attempts);
            if (previousKl is { } tighter) Assert.True(chosen.Selection.Loss <= tighter, $"looser target: KL {chosen.Selection.Loss:E4} > {tighter:E4}");
            previousKl = chosen.Selection.Loss;
        }
    }

    [Fact]
    public void ATargetBeyondTheFastestPlanOrOneTheStoredModelMeetsIsAOneLineError()
    {
        using var dir = new TempDir();
        var table = Plan(dir.File("sized"), "rtn.yaml", bitsPerWeight: 5).Table;
        double fastest = Speed(table, t => t.Min());
        var e = Assert.Throws<ShrinkException>(() => Plan(dir.File("too-fast"), "rtn.yaml", minTokensPerSecond: fastest * 1.01));
        Assert.Contains("--min-tokens-per-s", e.Message);
        Assert.Contains("faster than the fastest plan the menu allows", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.False(Directory.Exists(dir.File("too-fast")));

        // With "keep" on the menu, a target the model as stored already meets leaves nothing to plan.
        var kept = Plan(dir.File("kept"), "keep.yaml", bitsPerWeight: 8).Table;
        e = Assert.Throws<ShrinkException>(() => Plan(dir.File("slow"), "keep.yaml", minTokensPerSecond: 0.9 * kept.Decode!.FloatTokensPerSecond));
        Assert.Contains("the model as stored already generates at", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    /// <summary>
    /// The whole command on tinylit-8m with this machine's clock. The target is a quarter of the speed <c>bench</c> reads
    /// first, so that any plan of the menu (no "keep") can meet it even when another process slows one measurement
    /// down — consecutive readings on this shared machine differed by up to 4×. Timing itself is not asserted: the test
    /// checks that plan.md reports the measured speed and that the kept plan is one the job marked as meeting the target.
    /// </summary>
    [Fact]
    public void TheCliPlansForASpeedOnTinyLitAndReportsWhatItMeasured()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("menu.yaml"), "candidates:\n  - method: rtn\n    bits: [4, 8]\n    group_size: 128\n");
        var bench = CliTests.Run("bench", SharedData.TinyLit, "--prompt-tokens", "64", "--gen-tokens", "32", "-r", "3", "--json");
        Assert.Equal(0, bench.ExitCode);
        double floatSpeed = JsonDocument.Parse(bench.Stdout).RootElement.GetProperty("gen_tokens_per_second").GetDouble();
        // Written as plan.md writes a budget (shortest round trip: 116, not 116.0).
        string target = Math.Round(floatSpeed / 4, 1).ToString(System.Globalization.CultureInfo.InvariantCulture);
        string[] common = ["auto", SharedData.TinyLit, "--calib", SharedData.Corpus("tinylit_calib.txt"), "--candidates", dir.File("menu.yaml"),
            "--samples", "16", "--kl-samples", "2", "--anchors", "2", "--cache", dir.File("cache")];

        var (code, stdout, stderr) = CliTests.Run([.. common, "--min-tokens-per-s", target, "--out", dir.File("out")]);
        Assert.True(code == 0, stderr);
        foreach (var file in new[] { "model.safetensors.index.json", "config.json", "recipe.yaml", "plan.md", "pareto.png" })
            Assert.True(File.Exists(Path.Combine(dir.File("out"), file)), $"{file} missing");
        Assert.Contains("generation (this machine)", stdout);
        string plan = File.ReadAllText(Path.Combine(dir.File("out"), "plan.md"));
        output.WriteLine($"bench {floatSpeed:F1} tokens/s, target {target}\n{plan}");
        Assert.Contains($"| budget | --min-tokens-per-s {target} |", plan);
        // The kept attempt's row: ... | predicted tokens/s | measured tokens/s | meets the budget |
        var kept = plan.Split('\n').Single(l => l.Contains("(kept)")).Split('|', StringSplitOptions.TrimEntries);
        Assert.Equal("yes", kept[^2]);
        string measured = kept[^3];
        Assert.Matches(@"^\d+\.\d$", measured);
        Assert.Contains($"measured {measured} tokens/s (as stored: measured", plan);
        Assert.Contains("µs/token", plan);

        // From the cache: a target no plan of the menu reaches, and a second budget beside it, are one-line errors.
        CliTests.AssertUserError(CliTests.Run([.. common, "--min-tokens-per-s", "1e9", "--out", dir.File("too-fast")]), "faster than the fastest plan the menu allows");
        Assert.False(Directory.Exists(dir.File("too-fast")));
    }
}
