using System.Text.Json;
using LlmShrink.Evaluation;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>compress --eval (the before/after table and layer-errors.png) and eval --plot, and the statistics they draw.</summary>
public class BeforeAfterTests
{
    private static readonly byte[] PngSignature = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];

    private static void AssertPng(string path) => Assert.Equal(PngSignature, File.ReadAllBytes(path)[..8]);

    [Fact]
    public void Mean_nll_by_position_averages_each_position_over_the_windows()
    {
        // Position p of every window predicts with probability (p + 1)/10 for the target, and the rest spread evenly.
        const int vocab = 10, context = 4;
        var model = new FakeLogitModel(vocab, (position, _) =>
        {
            var row = new float[vocab];
            for (int t = 0; t < vocab; t++) row[t] = t == (position + 1) % vocab ? MathF.Log((position + 1) / 10f) : MathF.Log((1 - (position + 1) / 10f) / (vocab - 1));
            return row;
        });
        var scorer = new WindowScorer(context, PerplexityProtocol.Standard, null, model);
        for (int w = 0; w < 3; w++) scorer.Score([0, 1, 2, 3]);
        var mean = scorer.MeanNllByPosition();
        for (int p = 0; p < context - 1; p++) Assert.Equal(-Math.Log((p + 1) / 10.0), mean[p], 1e-6);
        Assert.True(double.IsNaN(mean[context - 1])); // the last position predicts nothing scored
    }

    [Theory]
    [InlineData(0.0, 0)]
    [InlineData(1e-6, 0)]
    [InlineData(1.5e-6, 1)]    // log10(1.5) · 10 = 1.76 → bin 1
    [InlineData(1e-3, 30)]
    [InlineData(9.99, 69)]
    [InlineData(1e3, 69)]      // beyond the last edge: the last bin
    public void Kl_histogram_bins_are_tenths_of_a_decade_from_1e_minus_6(double kl, int bin)
    {
        var histogram = new KlHistogram();
        histogram.Add(kl);
        Assert.Equal(1, histogram.Counts[bin]);
        Assert.Equal(70, histogram.Counts.Length);
    }

    /// <summary>
    /// The table's figures are the eval command's on the same windows: the original's perplexity is eval's reference
    /// perplexity, the compressed one's, KL and top-1 agreement are eval's with --reference.
    /// </summary>
    [Fact]
    public void Compress_with_eval_reports_the_figures_eval_measures_and_draws_the_layer_errors()
    {
        using var dir = new TempDir();
        string output = dir.File("w4"), eval = SharedData.Corpus("tinylit_eval.txt");
        var (code, stdout, stderr) = CliTests.Run("compress", SharedData.TinyLit, "--recipe", "w4g128-rtn", "--calib", "random", "--samples", "2", "--seq-len", "16",
            "--eval", eval, "--eval-ctx", "64", "--eval-chunks", "6", "--out", output);
        Assert.True(code == 0, stderr);
        Assert.Contains("before and after", stdout);

        var (evalCode, evalOut, evalErr) = CliTests.Run("eval", output, "--data", eval, "--ctx", "64", "--protocol", "llamacpp", "--max-chunks", "6",
            "--reference", SharedData.TinyLit, "--json");
        Assert.True(evalCode == 0, evalErr);
        var measured = JsonDocument.Parse(evalOut).RootElement;
        string report = File.ReadAllText(Path.Combine(output, "report.md"));
        string Row(string what) => report.Split('\n').Single(l => l.StartsWith($"| {what} |"));
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        Assert.Contains($"| {measured.GetProperty("reference_perplexity").GetDouble().ToString("F4", inv)} | {measured.GetProperty("perplexity").GetDouble().ToString("F4", inv)} (", Row("perplexity"));
        Assert.EndsWith($"| {measured.GetProperty("mean_kl_divergence").GetDouble().ToString("E3", inv)} |", Row("KL(original ‖ compressed), nats/token"));
        Assert.EndsWith($"| {measured.GetProperty("top1_agreement_percent").GetDouble().ToString("F2", inv)} % |", Row("top-1 agreement with the original"));
        // 6.29 M block weights at 4.16 bits (w4g128 with F16 scales and zeros) beside 2.10 M F32 embedding and head weights: 11.1–11.2.
        Assert.Matches(@"\| 32\.000 \| 11\.[12]\d{2} \|", Row("bits per weight (all tensors)"));

        Assert.Contains($"![relative output error of each block linear by depth](layer-errors.png)", report);
        AssertPng(Path.Combine(output, "layer-errors.png"));
    }

    [Fact]
    public void Eval_plot_draws_nll_by_position_and_with_a_reference_the_kl_histogram()
    {
        using var dir = new TempDir();
        string data = SharedData.Corpus("tinystories_val.txt");
        var alone = CliTests.Run("eval", SharedData.Stories260K, "--data", data, "--ctx", "64", "--max-chunks", "4", "--plot", dir.File("alone"));
        Assert.True(alone.ExitCode == 0, alone.Stderr);
        Assert.Equal(["nll-by-position.png"], Directory.GetFiles(dir.File("alone")).Select(Path.GetFileName));
        AssertPng(Path.Combine(dir.File("alone"), "nll-by-position.png"));

        var compared = CliTests.Run("eval", SharedData.Stories260K, "--data", data, "--ctx", "64", "--max-chunks", "4", "--reference", SharedData.Stories260K, "--plot", dir.File("compared"));
        Assert.True(compared.ExitCode == 0, compared.Stderr);
        AssertPng(Path.Combine(dir.File("compared"), "kl-histogram.png"));
    }

    [Fact]
    public void Eval_plot_refuses_a_folder_that_holds_files()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("keep.txt"), "mine");
        var result = CliTests.Run("eval", SharedData.Stories260K, "--data", SharedData.Corpus("tinystories_val.txt"), "--ctx", "64", "--max-chunks", "1", "--plot", dir.Path);
        CliTests.AssertUserError(result, "exists and is not empty");
        Assert.Equal("mine", File.ReadAllText(dir.File("keep.txt")));
    }
}
