using LlmShrink.Compression;
using LlmShrink.Formats;
using LlmShrink.Formats.Safetensors;
using LlmShrink.Planning;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>The planner's inputs: the candidate menu, the held-back split, the byte prices.</summary>
public class PlanningInputTests
{
    [Fact]
    public void DefaultMenuIsKeepAndEveryRtnAndGptqScheme()
    {
        var menu = CandidateMenu.Default;
        Assert.Equal(1 + 2 * 4 * 3 * 2, menu.Count);
        Assert.Equal("keep", menu[0].Name);
        Assert.Contains(menu, c => c.Name == "gptq bits=3 group_size=64 symmetric=false");
        Assert.Equal(menu.Count, menu.Select(c => c.Name).Distinct().Count());
    }

    [Fact]
    public void ListsExpandAndStepsStack()
    {
        var menu = CandidateMenu.Parse("""
            candidates:
              - method: rtn
                bits: [4, 8]
                granularity: channel
              - steps:
                  - method: sparsegpt
                    pattern: ["2:4", "4:8"]
                  - method: gptq
                    bits: 4
            """, "menu.yaml");
        Assert.Equal(["rtn bits=4 granularity=channel", "rtn bits=8 granularity=channel",
            "sparsegpt pattern=2:4 → gptq bits=4", "sparsegpt pattern=4:8 → gptq bits=4"], menu.Select(c => c.Name));
        Assert.Equal(2, menu[2].Methods().Count);
        Assert.Equal(StatisticsNeeds.Hessian, menu[2].Needs & StatisticsNeeds.Hessian);
    }

    [Fact]
    public void LowRankMethodsArePerLayerCandidatesAndShapeChangingOnesAreNot()
    {
        var menu = CandidateMenu.Parse("""
            candidates:
              - keep
              - method: svd-llm
                ratio: [0.2, 0.4]
                bits: 4
                group_size: 32
            """, "menu.yaml");
        Assert.Equal(["keep", "svd-llm bits=4 group_size=32 ratio=0.2", "svd-llm bits=4 group_size=32 ratio=0.4"], menu.Select(c => c.Name));
        Assert.Equal(StatisticsNeeds.Hessian, menu[1].Needs & StatisticsNeeds.Hessian);
        var e = Assert.Throws<ShrinkException>(() => CandidateMenu.Parse("candidates:\n  - method: awq\n", "menu.yaml"));
        Assert.Contains("svd-llm", e.Message); // the message lists the per-layer methods, low-rank ones among them
        Assert.DoesNotContain("awq,", e.Message);
    }

    [Theory]
    [InlineData("candidates: []", "the candidate list is empty")]
    [InlineData("candidates:\n  - method: drop-blocks\n", "cannot be a per-layer candidate")]
    [InlineData("candidates:\n  - method: fwsvd\n    ratio: 0.2\n", "needs a survey of the whole model")]
    [InlineData("candidates:\n  - method: svd-llm\n    ratio: 0.4\n    allocation: loss\n", "needs a survey of the whole model before the first block")]
    [InlineData("candidates:\n  - method: wanda\n    sparsity: 0.7\n    allocation: owl\n", "needs a survey of the whole model before the first block")]
    [InlineData("candidates:\n  - method: nope\n", "unknown method 'nope'")]
    [InlineData("candidates:\n  - method: gptq\n    targets: [q_proj]\n", "'targets' is chosen by the planner")]
    [InlineData("candidates:\n  - method: gptq\n    bits: [4, 5]\n", "bits")]
    [InlineData("modifiers:\n  - method: gptq\n", "a candidate menu is a mapping with a 'candidates' list")]
    public void BadMenusAreOneLineErrorsNamingTheFile(string yaml, string problem)
    {
        var e = Assert.Throws<ShrinkException>(() => CandidateMenu.Parse(yaml, "menu.yaml"));
        Assert.Contains("menu.yaml", e.Message);
        Assert.Contains(problem, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void HeldBackWindowsAvoidEveryCalibrationSample()
    {
        var tokens = Enumerable.Range(10, 2000).ToArray();
        var calibration = CalibrationSet.FromTokens(tokens, 1, 12, 64, seed: 3, "text");
        var windows = HeldBackSplit.Windows(tokens, calibration, 1, 100, 64, "text");
        Assert.NotEmpty(windows);
        var drawn = calibration.Samples.SelectMany(s => s.Skip(1)).ToHashSet();
        foreach (var w in windows)
        {
            Assert.Equal(64, w.Length);
            Assert.Equal(1, w[0]);
            Assert.DoesNotContain(w.Skip(1), drawn.Contains); // tokens are unique here, so no shared token = no overlap
            Assert.Equal(Enumerable.Range(w[1], 63), w.Skip(1)); // consecutive text
        }
        // Calibration drawn from tokens is the same as drawn from the file: same seed, same samples.
        Assert.Equal(calibration.Samples, CalibrationSet.FromTokens(tokens, 1, 12, 64, seed: 3, "text").Samples);
        var all = CalibrationSet.FromTokens(tokens, 1, 400, 64, seed: 3, "text");
        var e = Assert.Throws<ShrinkException>(() => HeldBackSplit.Windows(tokens, all, 1, 4, 64, "text"));
        Assert.Contains("no stretch of 63 tokens", e.Message);
    }

    /// <summary>A file of one tensor is its price plus the 8-byte length, the header's braces less the joining comma, and padding.</summary>
    [Theory]
    [InlineData(TensorType.F32, new long[] { 3, 5 })]
    [InlineData(TensorType.I32, new long[] { 128, 32 })]
    [InlineData(TensorType.F16, new long[] { 7 })]
    public void PricesAreTheWritersBytes(TensorType type, long[] shape)
    {
        using var dir = new TempDir();
        long bytes = shape.Aggregate(1L, (a, b) => a * b) * TensorTypes.BlockBytes(type);
        var entry = new SafetensorsWriter.Entry("model.layers.0.mlp.down_proj.qweight", type, shape, s => s.Write(new byte[bytes]));
        SafetensorsWriter.Write(dir.File("one.safetensors"), [entry]);
        long file = new FileInfo(dir.File("one.safetensors")).Length;
        Assert.InRange(file - SafetensorsWriter.StoredBytes([entry]) - 8 - 1, 0, 7);
        // Two tensors: the second's offsets have more digits in the file than when priced alone.
        var second = entry with { Name = "other" };
        SafetensorsWriter.Write(dir.File("two.safetensors"), [entry, second]);
        long two = new FileInfo(dir.File("two.safetensors")).Length;
        Assert.InRange(two - SafetensorsWriter.StoredBytes([entry]) - SafetensorsWriter.StoredBytes([second]) - 9, 0, 7 + 2 * 18);
    }

    /// <summary>Unmeasured candidates take the group's least-squares sensitivity (measured KL per unit of proxy) times their proxy.</summary>
    [Fact]
    public void PredictionsKeepMeasurementsAndScaleProxiesByTheFittedSensitivity()
    {
        CandidateMeasurement[] row = [new(100, 0, 0), new(50, 0.01, 0.002), new(40, 0.02, 0.005), new(30, 0.04, null)];
        var table = new MeasurementTable("k", ["g"], ["keep", "a", "b", "c"], [row], 1000, 1.5, Decode: null, MeasurementTable.CurrentVersion);
        double slope = (0.002 * 0.01 + 0.005 * 0.02) / (0.01 * 0.01 + 0.02 * 0.02);
        Assert.Equal(slope, table.Sensitivity(0), 12);
        Assert.Equal([0, 0.002, 0.005, slope * 0.04], table.PredictedKl(0));
    }

    [Fact]
    public void TheCacheRoundTripsAndADamagedOneIsAOneLineError()
    {
        using var dir = new TempDir();
        var table = new MeasurementTable("key", ["g0", "g1"], ["keep", "x"], [[new(8, 0, 0, 4e-6), new(4, 0.5, 0.01, 2.5e-6)], [new(9, 0, 0, 5e-6), new(3, 0.25, null, 1e-6)]],
            17, 2.5, new DecodeTiming(1000, [4e-6, 5e-6]), MeasurementTable.CurrentVersion);
        string path = dir.File("m.json");
        table.Save(path);
        var loaded = MeasurementTable.Load(path, "key")!;
        Assert.Equal(table.Groups, loaded.Groups);
        Assert.Equal(table.Candidates, loaded.Candidates);
        Assert.Equal(table.Entries.SelectMany(r => r), loaded.Entries.SelectMany(r => r));
        Assert.Equal(17, loaded.Parameters);
        Assert.Equal(1000, loaded.Decode!.FloatTokensPerSecond);
        Assert.Equal([4e-6, 5e-6], loaded.Decode.FloatSeconds);
        Assert.Null(MeasurementTable.Load(path, "another model"));
        Assert.Null(MeasurementTable.Load(dir.File("absent.json"), "key"));
        File.WriteAllText(path, "{\"Key\": \"key\", \"Entries\": [[{");
        var e = Assert.Throws<ShrinkException>(() => MeasurementTable.Load(path, "key"));
        Assert.StartsWith(path + ": damaged measurement cache", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    /// <summary>
    /// A cache written before decode times were measured (version 1: no times, no version) is measured again, not read
    /// with its times as zeros.
    /// </summary>
    [Fact]
    public void ACacheOfAnEarlierVersionIsMeasuredAgain()
    {
        using var dir = new TempDir();
        string path = dir.File("m.json");
        File.WriteAllText(path, """{"Key":"key","Groups":["g0"],"Candidates":["keep"],"Entries":[[{"Bytes":8,"Proxy":0,"MeasuredKl":0}]],"Parameters":17,"MeasurementSeconds":2.5}""");
        Assert.Null(MeasurementTable.Load(path, "key"));
    }

    /// <summary>
    /// The time model: what no plan changes is the float model's time per token less its groups' times, and a plan's
    /// speed is one over that plus its groups' times.
    /// </summary>
    [Fact]
    public void DecodeTimesAddToTheFixedPart()
    {
        var timing = new DecodeTiming(FloatTokensPerSecond: 100, FloatSeconds: [3e-3, 2e-3]); // 10 ms per token, 5 ms of it planned
        Assert.Equal(5e-3, timing.FixedSeconds, 12);
        Assert.Equal(1 / 7e-3, timing.PredictedTokensPerSecond(2e-3), 9);
        Assert.Equal(1 / 125.0 - 5e-3, timing.PlannedBudget(125), 12);
        // Timed apart on a busy machine the groups can outweigh the whole: the fixed part is then zero, not negative.
        Assert.Equal(0, new DecodeTiming(100, [8e-3, 4e-3]).FixedSeconds);
        Assert.Equal(1234, DecodeTiming.Nanoseconds(1.234e-6));
    }
}
