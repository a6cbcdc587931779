using System.Buffers.Binary;
using LlmShrink.Analysis;
using LlmShrink.Cli;
using LlmShrink.LinearAlgebra;
using LlmShrink.Model;
using LlmShrink.Planning;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>
/// One <c>llmshrink analyze</c> of tinylit-8m on a small calibration (16 samples × 128 tokens, KL on 4 held-back windows),
/// shared by the tests that read its output folder.
/// </summary>
public sealed class AnalyzedTinyLit : IDisposable
{
    private readonly TempDir _dir = new();
    public string Folder { get; }
    public AnalysisDocument Document { get; }
    public (int Code, string Stdout, string Stderr) Result { get; }

    public AnalyzedTinyLit()
    {
        Folder = _dir.File("analysis");
        Result = CliTests.Run("analyze", SharedData.TinyLit, "--calib", SharedData.Corpus("tinylit_calib.txt"), "--samples", "16", "--seq-len", "128",
            "--kl-samples", "4", "--out", Folder);
        Document = Result.Code == 0 ? AnalysisDocument.Load(Path.Combine(Folder, AnalysisJob.DocumentFile)) : null!;
    }

    public void Dispose() => _dir.Dispose();
}

public class AnalyzeTests(AnalyzedTinyLit analyzed) : IClassFixture<AnalyzedTinyLit>
{
    private static readonly byte[] PngSignature = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];

    private AnalysisDocument Document
    {
        get
        {
            Assert.True(analyzed.Result.Code == 0, analyzed.Result.Stderr);
            return analyzed.Document;
        }
    }

    [Fact]
    public void AnalysisJsonHoldsEveryBlockLinearOfEveryBlock()
    {
        var d = Document;
        Assert.Equal(AnalysisDocument.FormatName, d.Format);
        Assert.Equal(AnalysisDocument.CurrentVersion, d.Version);
        Assert.Equal(8, d.Model.Layers);
        Assert.Equal(16 * 128, d.Calibration.Tokens);
        Assert.Equal(4, d.Calibration.HeldBackWindows);
        Assert.Equal(56, d.Matrices.Count);
        Assert.Equal(56, d.Matrices.Select(m => m.Module).Distinct().Count());
        foreach (var type in AnalysisDocument.Types) Assert.Equal(8, d.Matrices.Count(m => m.Type == type));
        Assert.Equal(["rtn-3bit", "wanda-50", "half-rank"], d.Methods.Select(m => m.Id));
        Assert.Equal(8 * 4, d.Sites.Count); // q/k/v, o, gate/up and down inputs of every block
        Assert.True(d.Run.Seconds > 0 && d.Run.PeakWorkingSetBytes > 0);
    }

    /// <summary>Σσ² of the raw spectrum is ‖W‖_F² of the checkpoint's weight, and every spectrum has min(m, n) values, descending.</summary>
    [Fact]
    public void RawSpectraHoldTheWeightsEnergy()
    {
        using var model = ModelLoader.Load(SharedData.TinyLit);
        foreach (var m in Document.Matrices)
        {
            var w = model.Weights.Get(m.Module + ".weight").ToFloatArray();
            Assert.Equal((long)m.Rows * m.Columns, w.LongLength);
            double frobenius = w.Sum(x => (double)x * x);
            double energy = m.Raw.SingularValues.Sum(s => s * s);
            Assert.True(Math.Abs(energy - frobenius) <= 1e-9 * frobenius, $"{m.Module}: Σσ² {energy} against ‖W‖² {frobenius}");
            Assert.Equal(energy, m.Raw.Energy, 1e-9 * energy);
            foreach (var spectrum in new[] { m.Raw, m.Whitened })
            {
                Assert.Equal(Math.Min(m.Rows, m.Columns), spectrum.SingularValues.Length);
                Assert.All(spectrum.SingularValues, s => Assert.True(s >= 0 && double.IsFinite(s)));
                for (int i = 1; i < spectrum.SingularValues.Length; i++) Assert.True(spectrum.SingularValues[i] <= spectrum.SingularValues[i - 1]);
            }
        }
    }

    [Fact]
    public void EffectiveRanksAreOrderedAndWhiteningConcentratesTheEnergy()
    {
        var d = Document;
        foreach (var m in d.Matrices)
        {
            int k = Math.Min(m.Rows, m.Columns);
            Assert.Equal(m.Rows * m.Columns / (double)(m.Rows + m.Columns), m.BreakEvenRank, 1e-9);
            foreach (var spectrum in new[] { m.Raw, m.Whitened })
            {
                var ranks = spectrum.EffectiveRanks;
                Assert.Equal([0.90, 0.95, 0.99], ranks.Select(r => r.Energy));
                Assert.True(ranks[0].Rank <= ranks[1].Rank && ranks[1].Rank <= ranks[2].Rank, $"{m.Module}: {string.Join(", ", ranks.Select(r => r.Rank))}");
                Assert.InRange(ranks[0].Rank, 1, k);
                Assert.InRange(ranks[2].Rank, 1, k);
                foreach (var r in ranks)
                {
                    // r_p is the smallest rank holding p of the energy.
                    double held = spectrum.SingularValues.Take(r.Rank).Sum(s => s * s), before = spectrum.SingularValues.Take(r.Rank - 1).Sum(s => s * s);
                    Assert.True(held >= r.Energy * spectrum.Energy * (1 - 1e-12) && before < r.Energy * spectrum.Energy, $"{m.Module}: r{r.Energy} = {r.Rank}");
                    Assert.Equal(r.Rank / (double)k, r.OfMinDimension, 1e-12);
                    Assert.Equal(r.Rank / m.BreakEvenRank, r.OfBreakEven, 1e-12);
                }
                Assert.InRange(spectrum.EnergyAtHalfParameters, 0.0, 1.0);
            }
            Assert.InRange(m.WhiteningDampening, 1e-7, 1);
        }
        // Activations are far from isotropic, so whitening moves the energy into fewer directions: for most matrices (on
        // tinylit: all 56) the whitened spectrum needs fewer directions for 90 % than the raw one.
        int fewer = d.Matrices.Count(m => m.Whitened.EffectiveRanks[0].Rank < m.Raw.EffectiveRanks[0].Rank);
        Assert.True(fewer > d.Matrices.Count * 3 / 4, $"whitened r90 below raw r90 for only {fewer} of {d.Matrices.Count}");
    }

    [Fact]
    public void SensitivitiesAreFiniteAndNonNegative()
    {
        foreach (var m in Document.Matrices)
        {
            Assert.Equal(["half-rank", "rtn-3bit", "wanda-50"], m.Sensitivity.Keys.Order(StringComparer.Ordinal));
            foreach (var (method, s) in m.Sensitivity)
            {
                Assert.True(double.IsFinite(s.Kl) && s.Kl >= 0, $"{m.Module} {method}: KL {s.Kl}");
                Assert.True(double.IsFinite(s.RelativeOutputError) && s.RelativeOutputError >= 0, $"{m.Module} {method}: error {s.RelativeOutputError}");
                Assert.True(s.Bytes > 0);
            }
            Assert.True(m.Sensitivity["rtn-3bit"].Kl > 0, $"{m.Module}: 3-bit RTN changed nothing");
            // 3-bit codes and a 16-bit scale per 128 weights are far below the 32-bit weights of the checkpoint.
            Assert.True(m.Sensitivity["rtn-3bit"].Bytes * 8.0 / (m.Rows * m.Columns) < 4);
        }
    }

    [Fact]
    public void BlockInfluenceAndOutliersCoverEveryBlock()
    {
        var d = Document;
        Assert.Equal(Enumerable.Range(0, 8), d.Blocks.Select(b => b.Layer));
        Assert.All(d.Blocks, b => Assert.InRange(b.BlockInfluence, 1e-6, 2));
        Assert.All(d.Blocks, b => Assert.True(b.SensitivityIndex > 0 && double.IsFinite(b.SensitivityIndex)));
        foreach (var site in d.Sites)
        {
            Assert.True(site.MaxAbs.Ratio >= 1 && site.MeanAbs.Ratio >= 1);
            Assert.Equal(ActivationOutliers.TopChannels, site.MaxAbs.Top.Count);
            Assert.Equal(site.MaxAbs.Max, site.MaxAbs.Top[0].Value);
            Assert.All(site.MaxAbs.Top, t => Assert.InRange(t.Channel, 0, site.Channels - 1));
            Assert.Equal(site.MaxAbs.Top.Select(t => t.Value).OrderDescending(), site.MaxAbs.Top.Select(t => t.Value));
        }
    }

    /// <summary>The summary is computed: its first sentence names the type whose mean 3-bit RTN KL is largest in the numbers.</summary>
    [Fact]
    public void TheSummaryStatesWhatTheNumbersSay()
    {
        var d = Document;
        string most = AnalysisDocument.Types.MaxBy(t => d.Matrices.Where(m => m.Type == t).Average(m => m.Sensitivity["rtn-3bit"].Kl))!;
        Assert.StartsWith($"3-bit RTN: {most} is the most sensitive layer type", d.Summary[0]);
        var report = File.ReadAllText(Path.Combine(analyzed.Folder, AnalysisJob.ReportFile));
        Assert.All(d.Summary, sentence => Assert.Contains(sentence, report));
        Assert.All(d.Summary, sentence => Assert.Contains(sentence, analyzed.Result.Stdout));
    }

    [Fact]
    public void ChartsArePngsOfSensibleSizeAndTheReportShowsThem()
    {
        var report = File.ReadAllText(Path.Combine(analyzed.Folder, AnalysisJob.ReportFile));
        var files = AnalysisCharts.Files(Document);
        Assert.Equal(5, files.Count);
        foreach (var file in files)
        {
            var png = File.ReadAllBytes(Path.Combine(analyzed.Folder, file));
            Assert.Equal(PngSignature, png[..8]);
            Assert.Equal("IHDR", System.Text.Encoding.ASCII.GetString(png, 12, 4));
            Assert.InRange(BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(16)), 1000, 2000);
            Assert.InRange(BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(20)), 500, 1200);
            Assert.True(png.Length > 40_000, $"{file}: {png.Length} bytes is too little for a chart with data");
            Assert.Contains($"]({file})", report);
        }
    }

    /// <summary>
    /// The Gram-matrix spectrum agrees with the Jacobi SVD on wide and tall matrices: to 1e-6 relative down to 1e-4·σ₁, and
    /// to 1e-7·σ₁ below (squaring resolves σ only down to about √ε·σ₁).
    /// </summary>
    [Theory]
    [InlineData(40, 90)]
    [InlineData(90, 40)]
    [InlineData(33, 33)]
    public void GramSingularValuesMatchTheSvd(int rows, int columns)
    {
        var random = new Random(rows * 1000 + columns);
        var a = new double[rows * columns];
        for (int i = 0; i < a.Length; i++) a[i] = random.NextDouble() - 0.5;
        // Columns scaled over six decades, so the spectrum spans a wide range.
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++) a[r * columns + c] *= Math.Pow(10, -6.0 * c / columns);
        var expected = Svd.SingularValues(a, rows, columns);
        var actual = GramSpectrum.SingularValues(a, rows, columns);
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            double tolerance = expected[i] > 1e-4 * expected[0] ? 1e-6 * expected[i] : 1e-7 * expected[0];
            Assert.True(Math.Abs(actual[i] - expected[i]) <= tolerance, $"σ{i}: {actual[i]} against {expected[i]}");
        }
    }

    [Fact]
    public void BadInputIsAOneLineErrorAndLeavesNothing()
    {
        using var dir = new TempDir();
        string output = dir.File("out"), missing = dir.File("missing.txt"), binary = dir.File("model.bin");
        File.WriteAllBytes(binary, [0x47, 0x47, 0x55, 0x46, 0, 0, 0, 3, 0, 0xFF, 0x10, 0]);
        string[] Args(string model, string calib, params string[] more) => ["analyze", model, "--calib", calib, "--out", output, .. more];
        CliTests.AssertUserError(CliTests.Run(Args(SharedData.TinyLit, missing)), missing);
        CliTests.AssertUserError(CliTests.Run(Args(SharedData.TinyLit, binary)), $"{binary}: is a binary file, not calibration text (NUL byte at offset 4)");
        CliTests.AssertUserError(CliTests.Run(Args(dir.File("no-such-model"), SharedData.Corpus("tinylit_calib.txt"))), "no-such-model");
        CliTests.AssertUserError(CliTests.Run(Args(SharedData.TinyLit, SharedData.Corpus("tinylit_calib.txt"), "--methods", "rtn-3bit,gptq")), "--methods: unknown method 'gptq'");
        Assert.False(Directory.Exists(output));
        Assert.Equal([binary], Directory.EnumerateFileSystemEntries(dir.Path)); // the calibration file given, nothing written
    }

    [Fact]
    public void AnInterruptedAnalysisLeavesNothing()
    {
        using var dir = new TempDir();
        using var interrupted = new CancellationTokenSource();
        interrupted.Cancel();
        var (code, _, _) = CliTests.Run(interrupted.Token, "analyze", SharedData.TinyLit, "--calib", SharedData.Corpus("tinylit_calib.txt"), "--samples", "4",
            "--seq-len", "64", "--kl-samples", "1", "--out", dir.File("out"));
        Assert.Equal(Program.Interrupted, code);
        Assert.Empty(Directory.EnumerateFileSystemEntries(dir.Path));
    }

    // auto --analysis: the planner reads analyze's KLs back as its own measurements (same fixture: analyze runs once).

    private static AutoRequest Request(int seed = 0) => new(SharedData.TinyLit, SharedData.Corpus("tinylit_calib.txt"), "out")
    {
        Samples = 16, SequenceLength = 128, KlSamples = 4, Seed = seed, TargetBitsPerWeight = 4,
    };

    [Fact]
    public void ItsKlsAreWhatThePlannerMeasuresAndFusedGroupsSumTheirLayers()
    {
        Assert.True(analyzed.Result.Code == 0, analyzed.Result.Stderr);
        string path = Path.Combine(analyzed.Folder, AnalysisJob.DocumentFile);
        using var model = ModelLoader.Load(SharedData.TinyLit);
        using var transformer = new Transformer(model);
        var request = Request();
        var (calibration, held) = HeldBackSplit.Draw(request.CalibrationFile, model, request.Samples, request.SequenceLength, request.Seed, request.KlSamples);
        var rtn = SensitivityMethod.All.Single(m => m.Id == "rtn-3bit").ToCandidate();
        Candidate[] candidates = [Candidate.Keep, rtn];

        // Single layers: the analysis's KL is the measurement the planner would make, to the last bit.
        var layers = LayerGroup.Of(model.Config, fused: false);
        var prior = AnalysisPrior.Read(path, request, model, layers, candidates, held);
        var measured = new SensitivityMeasurement(model, transformer, layers, candidates, FolderStorageCost.Instance, anchors: 1) { MeasureEveryCandidate = true }
            .Measure(calibration, held, "prior-test");
        for (int g = 0; g < layers.Count; g++)
        {
            Assert.Null(prior[g][0]); // keep: nothing the analysis measured
            Assert.Equal(measured.Entries[g][1].MeasuredKl!.Value, prior[g][1]!.Value, 12);
        }

        // Fused groups: the sum of their layers'.
        var fused = LayerGroup.Of(model.Config, fused: true);
        var summed = AnalysisPrior.Read(path, request, model, fused, candidates, held);
        var byLayer = layers.Select((group, g) => (group, g)).ToDictionary(x => (x.group.Layer, x.group.Roles[0]), x => prior[x.g][1]!.Value);
        for (int g = 0; g < fused.Count; g++)
            Assert.Equal(fused[g].Roles.Sum(r => Math.Max(byLayer[(fused[g].Layer, r)], 0)), summed[g][1]!.Value, 12);
    }

    [Fact]
    public void AnotherCalibrationDrawingIsAOneLineError()
    {
        Assert.True(analyzed.Result.Code == 0, analyzed.Result.Stderr);
        string path = Path.Combine(analyzed.Folder, AnalysisJob.DocumentFile);
        using var model = ModelLoader.Load(SharedData.TinyLit);
        var request = Request(seed: 5);
        var (_, held) = HeldBackSplit.Draw(request.CalibrationFile, model, request.Samples, request.SequenceLength, request.Seed, request.KlSamples);
        var e = Assert.Throws<ShrinkException>(() => AnalysisPrior.Read(path, request, model, LayerGroup.Of(model.Config, fused: true), [Candidate.Keep], held));
        Assert.Contains("seed 0), not on this run's 4 of 'tinylit_calib.txt' (16 × 128, seed 5)", e.Message);
        Assert.StartsWith(path, e.Message);
    }
}
