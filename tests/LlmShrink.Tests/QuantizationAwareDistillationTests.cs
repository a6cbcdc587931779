using Xunit;
using Xunit.Abstractions;

namespace LlmShrink.Tests;

/// <summary>Issue 14's QAT bar, through the CLI: a GPTQ w3g128 tinylit-8m distilled from tinylit-8m scores a lower held-out KL than before.</summary>
[Collection(CompressedTinyLit.Collection)]
public class QuantizationAwareDistillationTests(ITestOutputHelper output)
{
    /// <summary>
    /// tinylit-8m GPTQ w3g128 (the shared fixture's 8 × 128 calibration tokens), distilled in the default weights+scales
    /// mode for 40 steps of 4 × 64 tokens of tinylit_calib.txt, re-packed, and scored against tinylit-8m on the first
    /// 40 × 256 tokens of the held-out tinylit_eval.txt (llama.cpp's protocol): its KL must be below the GPTQ student's,
    /// by at least a tenth. Measured: 0.01646 → 0.01387 (−15.7 %; 30 steps gave 0.01437). About a minute on 2 cores,
    /// most of it the 40 steps; the CLI at 100 steps of 8 × 128 on the preset's 128 × 256 calibration: 0.01159 → 0.00748.
    /// </summary>
    [Fact]
    public void Distilling_a_gptq_w3g128_student_lowers_its_held_out_kl()
    {
        string gptq = CompressedTinyLit.Gptq("bits: 3\n    group_size: 128\n    symmetric: true");
        using var dir = new TempDir();
        string distilled = dir.File("qat");
        var (code, _, stderr) = CliTests.Run(["distill", "--teacher", SharedData.TinyLit, "--student", gptq, "--data", SharedData.Corpus("tinylit_calib.txt"),
            "--steps", "40", "--batch", "4", "--seq-len", "64", "--warmup", "3", "--out", distilled]);
        Assert.True(code == 0, stderr);
        Assert.Contains("56 quantized tensors train weights and scales", stderr);

        double before = HeldOutScore.Of(gptq, Chunks).Kl, after = HeldOutScore.Of(distilled, Chunks).Kl;
        output.WriteLine($"held-out KL: GPTQ w3g128 {before:F5}, distilled {after:F5}");
        Assert.True(after < 0.9 * before, $"KL {before:F5} → {after:F5}");
    }

    private const int Chunks = 40;
}
