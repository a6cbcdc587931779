using System.CommandLine;
using System.Diagnostics;
using LlmShrink.Compression;
using LlmShrink.Planning;

namespace LlmShrink.Cli.Commands;

/// <summary>
/// <c>llmshrink auto MODEL --calib FILE (--target-bpw B | --target-size BYTES | --max-kl K | --min-tokens-per-s S) --out DIR</c>: measure every
/// candidate on every layer group, plan per group under the budget, write the compressed folder with the plan as its
/// recipe and plan.md explaining it.
/// </summary>
internal static class AutoCommand
{
    public static Command Create(CancellationToken cancellation)
    {
        var model = new Argument<string>("model") { Description = "Model to compress (Hugging Face folder or id)" };
        var calib = new Option<string>("--calib") { Description = "Calibration text (samples drawn as compress draws them; KL measured on the text no sample covers), or 'random' for random token ids (random-weight models)", Required = true };
        var targetBpw = new Option<double?>("--target-bpw") { Description = "Budget: bits per weight of the planned layers as written" };
        var targetSize = new Option<long?>("--target-size") { Description = "Budget: bytes of the written safetensors files" };
        var maxKl = new Option<double?>("--max-kl") { Description = "Budget: mean KL per token to the original on held-back text (the smallest plan that meets it)" };
        var minSpeed = new Option<double?>("--min-tokens-per-s") { Description = "Budget: generation speed of the written model on this machine, tokens/s (the least-KL plan that reaches it; alone, not with another budget)" };
        var format = new Option<string>("--format") { Description = "Output: folder (Hugging Face, GPTQ layout) or gguf (a folder holding model.gguf for llama.cpp)", DefaultValueFactory = _ => "folder" };
        var embeddingType = new Option<string>("--embedding-type") { Description = "gguf: type of the token embeddings, or 'auto' to plan it with the layers (under --target-size or --max-kl)", DefaultValueFactory = _ => "Q4_K" };
        var candidates = new Option<string?>("--candidates") { Description = "YAML candidate menu (default folder: keep, RTN and GPTQ at 2/3/4/8 bits, groups 32/64/128, sym/asym; gguf: Q2_K…Q6_K, Q8_0)" };
        var timeLayers = new Option<bool>("--time-layers") { Description = "Time every candidate at one token even without --min-tokens-per-s, so that a later speed budget re-plans from --cache" };
        var analysis = new Option<string?>("--analysis") { Description = "analysis.json of `llmshrink analyze` on the same model and calibration: candidates it measured (e.g. 3-bit RTN g128) reuse its KLs" };
        var cache = new Option<string?>("--cache") { Description = "Folder keeping measurements: another budget on the same model, calibration and menu re-plans without measuring" };
        var samples = new Option<int>("--samples") { Description = "Calibration samples", DefaultValueFactory = _ => 128 };
        var seqLen = new Option<int>("--seq-len") { Description = "Tokens per calibration sample and per held-back window", DefaultValueFactory = _ => 256 };
        var seed = new Option<int>("--seed") { Description = "Seed for drawing calibration samples", DefaultValueFactory = _ => 0 };
        var klSamples = new Option<int>("--kl-samples") { Description = "Held-back windows to measure KL on", DefaultValueFactory = _ => 8 };
        var anchors = new Option<int>("--anchors") { Description = "Candidates per group whose end-to-end KL is measured", DefaultValueFactory = _ => 4 };
        var output = new Option<string>("--out") { Description = "Output folder (must not exist or be empty)", Required = true };
        var threads = new Option<int>("--threads") { Description = "Worker threads (0 = all cores)", DefaultValueFactory = _ => 0 };
        var command = new Command("auto", "Plan per-layer compression under a budget from measured sensitivities, and apply it")
        {
            model, calib, targetBpw, targetSize, maxKl, minSpeed, timeLayers, format, embeddingType, candidates, analysis, cache, samples, seqLen, seed, klSamples, anchors, output, threads,
        };
        command.SetAction(parse =>
        {
            var planFormat = parse.GetValue(format) switch
            {
                "folder" => PlanFormat.Folder,
                "gguf" => PlanFormat.Gguf,
                var other => throw new ShrinkException($"--format {other}: not folder or gguf"),
            };
            Formats.TensorType? embedding = parse.GetValue(embeddingType) is "auto" ? null
                : Enum.TryParse<Formats.TensorType>(parse.GetValue(embeddingType), ignoreCase: true, out var t) && Export.GgufExporter.Types.Contains(t) ? t
                : throw new ShrinkException($"--embedding-type {parse.GetValue(embeddingType)}: not 'auto' or a GGUF export type ({string.Join(", ", Export.GgufExporter.Types)})");
            var request = new AutoRequest(parse.GetValue(model)!, parse.GetValue(calib)!, parse.GetValue(output)!)
            {
                TargetBitsPerWeight = parse.GetValue(targetBpw), TargetSize = parse.GetValue(targetSize), MaxKl = parse.GetValue(maxKl), MinTokensPerSecond = parse.GetValue(minSpeed), TimeLayers = parse.GetValue(timeLayers),
                CandidatesFile = parse.GetValue(candidates), CacheFolder = parse.GetValue(cache), AnalysisFile = parse.GetValue(analysis),
                Samples = parse.GetValue(samples), SequenceLength = parse.GetValue(seqLen), Seed = parse.GetValue(seed),
                KlSamples = parse.GetValue(klSamples), Anchors = parse.GetValue(anchors), Threads = parse.GetValue(threads),
                Format = planFormat, EmbeddingType = embedding,
            };
            if (request.Threads < 0) throw new ShrinkException($"--threads: must not be negative (got {request.Threads})");
            bool applying = false;
            var summary = Terminal.WithProgress("planning", 1, report => AutoCompressionJob.Run(request, new Progress<PipelineProgress>(p =>
            {
                applying |= p.Stage.StartsWith("applying", StringComparison.Ordinal);
                double fraction = (p.Layer + 0.5) / p.Layers;
                report(applying ? 0.7 + 0.3 * fraction : 0.7 * fraction);
            }), cancellation));
            var c = summary.Chosen;
            var table = Terminal.KeyValueTable("planned")
                .AddText("output", request.Output)
                .AddText("plan", $"{summary.Groups.Count} groups, {c.Selection.Choices.Distinct().Count()} distinct choices (recipe.yaml, plan.md)")
                .AddText("bits per weight (planned layers)", $"{summary.BitsPerWeight:F3}")
                .AddText("size on disk", Terminal.Bytes(c.TotalBytes))
                .AddText("KL on held-back text", $"predicted {c.Selection.Loss:E3}, measured {c.MeasuredKl:E3}")
                .AddText("generation (this machine)", summary.Decode is { } timing
                    ? $"predicted {c.PredictedTokensPerSecond:F1} tokens/s, measured {c.MeasuredTokensPerSecond:F1} tokens/s (as stored {timing.FloatTokensPerSecond:F1})"
                    : $"measured {c.MeasuredTokensPerSecond:F1} tokens/s")
                .AddText("plans written", summary.Attempts.Count.ToString())
                .AddText("measurement", summary.FromCache ? "from the cache" : $"{summary.Table.MeasurementSeconds:F1} s")
                .AddText("time", $"{summary.Elapsed.TotalSeconds:F1} s")
                .AddText("peak memory", Terminal.Bytes(Process.GetCurrentProcess().PeakWorkingSet64));
            Terminal.Stdout().Write(table);
            return 0;
        });
        return command;
    }
}
