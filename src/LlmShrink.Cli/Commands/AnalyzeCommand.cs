using System.CommandLine;
using LlmShrink.Analysis;
using LlmShrink.Compression;

namespace LlmShrink.Cli.Commands;

/// <summary>
/// <c>llmshrink analyze MODEL --calib FILE --out DIR</c>: spectra, activation outliers, block influence and per-layer
/// sensitivity in one streaming pass; writes analysis.json, report.md and the charts.
/// </summary>
internal static class AnalyzeCommand
{
    public static Command Create(CancellationToken cancellation)
    {
        var model = new Argument<string>("model") { Description = "Model to analyze (Hugging Face folder or id, GGUF file)" };
        var calib = new Option<string>("--calib") { Description = "Calibration text (samples drawn as compress draws them; KL measured on the text no sample covers), or 'random' for random token ids (random-weight models)", Required = true };
        var samples = new Option<int>("--samples") { Description = "Calibration samples", DefaultValueFactory = _ => 128 };
        var seqLen = new Option<int>("--seq-len") { Description = "Tokens per calibration sample and per held-back window", DefaultValueFactory = _ => 256 };
        var seed = new Option<int>("--seed") { Description = "Seed for drawing calibration samples", DefaultValueFactory = _ => 0 };
        var klSamples = new Option<int>("--kl-samples") { Description = "Held-back windows to measure KL on", DefaultValueFactory = _ => 8 };
        var methods = new Option<string>("--methods")
        {
            Description = $"Sensitivities to measure on every layer, comma-separated ({string.Join(", ", SensitivityMethod.All.Select(m => $"{m.Id}: {m.Description}"))})",
            DefaultValueFactory = _ => string.Join(",", SensitivityMethod.All.Select(m => m.Id)),
        };
        var output = new Option<string>("--out") { Description = "Output folder (must not exist or be empty)", Required = true };
        var threads = new Option<int>("--threads") { Description = "Worker threads (0 = all cores)", DefaultValueFactory = _ => 0 };
        var command = new Command("analyze", "Measure where a model compresses cheaply: spectra, outliers, block influence, per-layer sensitivity")
        {
            model, calib, samples, seqLen, seed, klSamples, methods, output, threads,
        };
        command.SetAction(parse =>
        {
            var request = new AnalysisRequest(parse.GetValue(model)!, parse.GetValue(calib)!, parse.GetValue(output)!)
            {
                Samples = parse.GetValue(samples), SequenceLength = parse.GetValue(seqLen), Seed = parse.GetValue(seed),
                KlSamples = parse.GetValue(klSamples), Methods = SensitivityMethod.Parse(parse.GetValue(methods)!), Threads = parse.GetValue(threads),
            };
            var lines = Terminal.StageLines();
            var document = Terminal.WithProgress("analyzing", 1, report => AnalysisJob.Run(request,
                lines ?? new Progress<PipelineProgress>(p => report(Math.Min(1, (p.Layer + p.Done) / p.Layers))), cancellation));
            var table = Terminal.KeyValueTable("analyzed")
                .AddText("output", $"{request.Output} ({AnalysisJob.ReportFile}, {AnalysisJob.DocumentFile}, {AnalysisCharts.Files(document).Count} charts)")
                .AddText("matrices", $"{document.Matrices.Count} block linears, {document.Methods.Count} methods each")
                .AddText("time", $"{document.Run.Seconds:F1} s")
                .AddText("peak memory", Terminal.Bytes(document.Run.PeakWorkingSetBytes));
            var stdout = Terminal.Stdout();
            stdout.Write(table);
            foreach (var sentence in document.Summary) Console.Out.WriteLine($"- {sentence}");
            return 0;
        });
        return command;
    }
}
