using System.CommandLine;
using LlmShrink.Compression;
using LlmShrink.Compression.Recipes;
using LlmShrink.Evaluation;
using Spectre.Console;

namespace LlmShrink.Cli.Commands;

/// <summary>
/// <c>llmshrink compress MODEL --recipe PRESET|FILE --calib FILE --out DIR</c>: sequential layer-by-layer compression
/// into a Hugging Face folder with packed GPTQ-layout weights, the recipe and a report.
/// </summary>
internal static class CompressCommand
{
    public static Command Create(CancellationToken cancellation)
    {
        var model = new Argument<string>("model") { Description = "Model to compress (Hugging Face folder or id)" };
        var recipe = new Option<string>("--recipe") { Description = $"Preset ({string.Join(", ", RecipePresets.Names)}) or a YAML recipe file", Required = true };
        var calib = new Option<string>("--calib") { Description = "Calibration text file, or the literal 'random' for uniformly random token ids (seeded by --seed; needs no tokenizer, for speed work on random-weight models)", Required = true };
        var samples = new Option<int>("--samples") { Description = "Calibration samples", DefaultValueFactory = _ => 128 };
        var seqLen = new Option<int>("--seq-len") { Description = "Tokens per calibration sample", DefaultValueFactory = _ => 256 };
        var seed = new Option<int>("--seed") { Description = "Seed for drawing calibration samples", DefaultValueFactory = _ => 0 };
        var output = new Option<string>("--out") { Description = "Output folder (must not exist or be empty)", Required = true };
        var threads = new Option<int>("--threads") { Description = "Worker threads (0 = all cores)", DefaultValueFactory = _ => 0 };
        var eval = new Option<string?>("--eval") { Description = "Held-out text: evaluate the original and the result on it (perplexity, KL, top-1 agreement, speed) and put the before/after table in report.md" };
        var evalContext = new Option<int>("--eval-ctx") { Description = "Window length in tokens for --eval (llama.cpp's perplexity protocol)", DefaultValueFactory = _ => 512 };
        var evalChunks = new Option<int?>("--eval-chunks") { Description = "Evaluate at most this many windows of --eval (default: the whole text)" };
        var command = new Command("compress", "Compress a model with a recipe, calibrated layer by layer")
        {
            model, recipe, calib, samples, seqLen, seed, output, threads, eval, evalContext, evalChunks,
        };
        command.SetAction(parse =>
        {
            var request = new CompressionRequest(parse.GetValue(model)!, parse.GetValue(recipe)!, parse.GetValue(calib)!,
                parse.GetValue(samples), parse.GetValue(seqLen), parse.GetValue(seed), parse.GetValue(output)!, parse.GetValue(threads))
            {
                Evaluation = parse.GetValue(eval) is { } file ? new HeldOutEvaluation(file, parse.GetValue(evalContext), parse.GetValue(evalChunks) ?? int.MaxValue) : null,
            };
            if (request.Threads < 0) throw new ShrinkException($"--threads: must not be negative (got {request.Threads})");
            string[] stages = request.Evaluation is null ? ["compressing"] : ["compressing", "evaluating"];
            var summary = Terminal.WithStages(stages, report => CompressionJob.Run(request, new Terminal.SynchronousProgress<PipelineProgress>(p =>
                {
                    if (p.Stage == CompressionJob.EvaluatingStage) report(1, p.Done);
                    else report(0, (p.Layer + StageFraction(p.Stage) + (p.Stage == "compressing" ? 0.4 * p.Done : 0)) / p.Layers);
                }), cancellation));
            var p = summary.Pipeline;
            var table = Terminal.KeyValueTable("compressed")
                .AddText("output", request.Output)
                .AddText("layers compressed", p.Layers.Count.ToString())
                .AddText("bits per weight (linear layers)", $"{summary.LinearBitsPerWeight:F3}")
                .AddText("size on disk", $"{Terminal.Bytes(summary.OriginalBytes)} → {Terminal.Bytes(summary.CompressedBytes)}")
                .AddText("mean relative output error", $"{p.Layers.Where(l => double.IsFinite(l.RelativeOutputError)).Select(l => l.RelativeOutputError).DefaultIfEmpty(0).Average():E3}")
                .AddText("time", $"{p.Elapsed.TotalSeconds:F1} s")
                .AddText("peak memory", Terminal.Bytes(p.PeakWorkingSetBytes));
            Terminal.Stdout().Write(table);
            if (summary.Comparison is { } c)
            {
                var comparison = new Table().Title($"before and after, on {c.Data}")
                    .AddColumn("").AddColumn(new TableColumn("original").RightAligned()).AddColumn(new TableColumn("compressed").RightAligned());
                foreach (var (what, before, after) in c.Rows()) comparison.AddText(what, before, after);
                Terminal.Stdout().Write(comparison);
            }
            return 0;
        });
        return command;
    }

    private static double StageFraction(string stage) => stage switch { "calibrating" => 0, "compressing" => 0.4, _ => 0.8 };
}
