using Xunit;
using Xunit.Abstractions;

namespace LlmShrink.Tests;

/// <summary>Issue 14's LoRA bar, through the CLI: LoRA recovery of tinylit-8m with a quarter of its blocks dropped.</summary>
[Collection(CompressedTinyLit.Collection)]
public class LoraRecoveryTests(ITestOutputHelper output)
{
    /// <summary>
    /// tinylit-8m `drop-blocks` 0.25 (the shared fixture's 8 × 128 calibration tokens; 6 blocks left), distilled from
    /// tinylit-8m with rank-8 adapters on every block linear (α = 16) for 40 steps of 4 × 64 tokens of tinylit_calib.txt
    /// at LoRA's default rate 1e-3, merged, and scored against tinylit-8m on the first 40 × 256 tokens of the held-out
    /// tinylit_eval.txt: the issue asks for ≥ 30 % of the KL gap recovered. Measured: 0.27538 → 0.16847, 38.8 % closed; 36 s of CPU with the
    /// fixture's compression. The CLI at its defaults on the whole held-out text: docs/BENCHMARKS.md.
    /// </summary>
    [Fact]
    public void Lora_recovery_of_drop_blocks_25_closes_30_percent_of_its_kl_gap()
    {
        string dropped = CompressedTinyLit.Folder("drop-blocks", "fraction: 0.25");
        using var dir = new TempDir();
        string recovered = dir.File("lora");
        var (code, _, stderr) = CliTests.Run(["distill", "--teacher", SharedData.TinyLit, "--student", dropped, "--data", SharedData.Corpus("tinylit_calib.txt"),
            "--steps", "40", "--batch", "4", "--seq-len", "64", "--warmup", "3", "--lora-rank", "8", "--out", recovered]);
        Assert.True(code == 0, stderr);
        Assert.Contains("LoRA r=8 α=16 on 42 modules", stderr);
        Assert.Contains("peak rate 0.001", File.ReadAllText(Path.Combine(recovered, "report.md")));

        double before = HeldOutScore.Of(dropped, Chunks).Kl, after = HeldOutScore.Of(recovered, Chunks).Kl;
        double closed = 1 - after / before;
        output.WriteLine($"held-out KL: drop-blocks-25 {before:F5}, LoRA-recovered {after:F5}: {closed:P1} of the gap closed");
        Assert.True(closed >= Bound, $"KL {before:F5} → {after:F5} closes {closed:P1} of the gap");
    }

    private const double Bound = 0.3;
    private const int Chunks = 40;
}
