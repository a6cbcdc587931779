using System.Diagnostics;
using LlmShrink.Compression;
using LlmShrink.Compression.LowRank;
using LlmShrink.Formats;
using LlmShrink.Model;
using LlmShrink.Planning;

namespace LlmShrink.Analysis;

/// <summary>What <c>llmshrink analyze</c> was asked: the model, calibration drawn as <c>compress</c> and <c>auto</c> draw it, the methods.</summary>
public sealed record AnalysisRequest(string Model, string CalibrationFile, string Output)
{
    public int Samples { get; init; } = 128;
    public int SequenceLength { get; init; } = 256;
    public int Seed { get; init; }
    /// <summary>Held-back windows (of <see cref="SequenceLength"/> tokens) the KL is measured on.</summary>
    public int KlSamples { get; init; } = 8;
    public IReadOnlyList<SensitivityMethod> Methods { get; init; } = SensitivityMethod.All;
    public int Threads { get; init; }
}

/// <summary>
/// <c>llmshrink analyze</c>: one streaming pass through the float model, block by block as the compression pipeline
/// runs, measures every block linear's sensitivity to each method (<see cref="LayerSensitivity.Measure"/>) and, from the
/// same pass, the spectra, activation outliers and block influence (<see cref="AnalysisObserver"/>). Then analysis.json,
/// the charts and report.md are written into a temporary folder that is renamed into place when all are done.
/// lm_head is left out: the analysis compares layer types across depth, which lm_head has no peers for; its spectrum
/// alone would cost more than a block's on a large vocabulary (128k × 2048 on Llama-3.2-1B); and the planner measures its
/// sensitivity itself when it plans it (GGUF).
/// </summary>
public static class AnalysisJob
{
    public const string DocumentFile = "analysis.json", ReportFile = "report.md";

    public static AnalysisDocument Run(AnalysisRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancel = default)
    {
        var started = DateTime.UtcNow;
        var clock = Stopwatch.StartNew();
        if (request.Methods.Count == 0) throw new ShrinkException("--methods: name at least one method");
        if (request.Threads < 0) throw new ShrinkException($"--threads: must not be negative (got {request.Threads})");
        CalibrationSet.CheckSource(request.CalibrationFile);
        using var model = ModelLoader.Load(request.Model, cancellation: cancel);
        using var output = new OutputFolder(request.Output, model.Weights.Files.Select(f => f.Path).Append(model.Source));
        var (calibration, held) = HeldBackSplit.Draw(request.CalibrationFile, model, request.Samples, request.SequenceLength, request.Seed, request.KlSamples);
        using var transformer = new Transformer(model, request.Threads);

        var observer = new AnalysisObserver(model.Config, request.Threads, progress);
        var measuring = Stopwatch.StartNew();
        var sensitivity = LayerSensitivity.Measure(model, transformer, calibration, held, request.Methods, observer, progress, cancel);
        measuring.Stop();

        var c = model.Config;
        var matrices = new List<MatrixAnalysis>();
        for (int layer = 0; layer < c.NumLayers; layer++)
            foreach (var role in LinearRoles.All)
            {
                var (raw, whitened, dampening) = observer.Spectra[(layer, role)];
                var linear = LinearRoles.Get(transformer.Blocks[layer], role);
                int rows = linear.OutFeatures, columns = linear.InFeatures;
                matrices.Add(new MatrixAnalysis(LinearRoles.ModulePath(layer, role), layer, LinearRoles.ModuleName(role), rows, columns,
                    LowRankFactors.BreakEvenRank(rows, columns), LowRankFactors.RankForRatio(rows, columns, 0.5), raw, whitened, dampening, sensitivity[(layer, role)]));
            }
        var index = LayerSensitivity.BlockIndex(c.NumLayers, [.. matrices.Select(m => (m.Layer, m.Sensitivity))], [.. request.Methods.Select(m => m.Id)]);
        var influence = observer.BlockInfluence;
        var blocks = Enumerable.Range(0, c.NumLayers).Select(l => new BlockAnalysis(l, influence[l], index[l])).ToList();

        var document = new AnalysisDocument(AnalysisDocument.FormatName, AnalysisDocument.CurrentVersion,
            new AnalyzedModel(request.Model, c.Architecture, c.NumLayers, c.HiddenSize, c.IntermediateSize, c.NumHeads, c.NumKvHeads, c.HeadDim, c.VocabSize, model.BytesOnDisk),
            new AnalyzedCalibration(request.CalibrationFile, request.Samples, request.SequenceLength, request.Seed, calibration.TokenCount, held.Length, held.Sum(w => (long)w.Length)),
            request.Methods, matrices, observer.Outliers, blocks, [],
            new AnalysisRun(started, 0, observer.Elapsed.TotalSeconds, measuring.Elapsed.TotalSeconds, 0, request.Threads, Environment.ProcessorCount));
        document = document with { Summary = AnalysisSummary.Sentences(document) };

        progress?.Report(new PipelineProgress(c.NumLayers - 1, c.NumLayers, "drawing charts", 0.99));
        AnalysisCharts.Write(output.Path, document);
        // Time and peak memory as of the last file: the report states them, so they are taken just before it is written.
        document = document with { Run = document.Run with { Seconds = clock.Elapsed.TotalSeconds, PeakWorkingSetBytes = PeakWorkingSet() } };
        document.Save(output.File(DocumentFile));
        File.WriteAllText(output.File(ReportFile), AnalysisReport.Write(document));
        output.Commit();
        return document;
    }

    private static long PeakWorkingSet()
    {
        using var process = Process.GetCurrentProcess();
        return process.PeakWorkingSet64;
    }
}
