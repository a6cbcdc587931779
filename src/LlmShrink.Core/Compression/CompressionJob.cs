using System.Globalization;
using System.Text;
using LlmShrink.Compression.Recipes;
using LlmShrink.Evaluation;
using LlmShrink.Export;
using LlmShrink.Formats;
using LlmShrink.Model;

namespace LlmShrink.Compression;

/// <summary>What the user asked for: model, recipe, calibration text and sampling, output folder.</summary>
public sealed record CompressionRequest(string Model, string Recipe, string CalibrationFile, int Samples, int SequenceLength, int Seed, string Output, int Threads = 0)
{
    /// <summary>Held-out text to compare the original and the result on (compress --eval), or null.</summary>
    public HeldOutEvaluation? Evaluation { get; init; }
}

/// <summary>compress --eval FILE --eval-ctx N --eval-chunks K: windows of <paramref name="Context"/> tokens, at most <paramref name="MaxWindows"/>.</summary>
public sealed record HeldOutEvaluation(string File, int Context, int MaxWindows);

/// <summary>A finished compression: the pipeline's figures, the sizes on disk before and after, and the held-out comparison if asked for.</summary>
public sealed record CompressionSummary(PipelineResult Pipeline, long OriginalBytes, long CompressedBytes, double LinearBitsPerWeight, BeforeAfter? Comparison = null);

/// <summary>
/// <c>llmshrink compress</c> as a library call: load, draw calibration samples, run the sequential pipeline with the
/// checkpoint writer as its sink, then write the report. The output folder appears only when everything succeeded.
/// </summary>
public static class CompressionJob
{
    public static CompressionSummary Run(CompressionRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancel = default) =>
        Run(request, Recipe.Load(request.Recipe), progress, cancel);

    /// <summary>Compresses with <paramref name="recipe"/> (built in code, e.g. a plan) instead of <see cref="CompressionRequest.Recipe"/>, which only names it in the report.</summary>
    public static CompressionSummary Run(CompressionRequest request, Recipe recipe, IProgress<PipelineProgress>? progress = null, CancellationToken cancel = default)
    {
        CalibrationSet.CheckSource(request.CalibrationFile);
        if (request.Evaluation is { } asked)
        {
            TextFile.EnsureText(asked.File, "evaluation text");
            if (asked.Context < 4) throw new ShrinkException($"--eval-ctx: must be at least 4 tokens (got {asked.Context})");
            if (asked.MaxWindows < 1) throw new ShrinkException($"--eval-chunks: must be at least 1 (got {asked.MaxWindows})");
        }
        using var model = ModelLoader.Load(request.Model, cancellation: cancel);
        var calibration = request.CalibrationFile == CalibrationSet.RandomSource
            ? CalibrationSet.Random(model.Config.VocabSize, model.Config.BosTokenId, request.Samples, request.SequenceLength, request.Seed)
            : CalibrationSet.FromFile(request.CalibrationFile, model.RequireTokenizer(), request.Samples, request.SequenceLength, request.Seed);
        using var transformer = new Transformer(model, request.Threads);
        using var writer = new CompressedCheckpointWriter(model, request.Output);
        var result = new SequentialPipeline(model, transformer, recipe).Run(calibration, writer, progress, cancel, releaseFinishedBlocks: true);

        double linearBits = result.BitsPerWeight;
        writer.WriteModel(recipe.Text);
        BeforeAfter? comparison = null;
        if (request.Evaluation is { } held)
        {
            // The written folder, loaded as any user would load it, before it is moved into place.
            using var written = ModelLoader.Load(writer.Folder);
            comparison = BeforeAfter.Measure(model, written, held.File, held.Context, held.MaxWindows, request.Threads,
                done => progress?.Report(new PipelineProgress(0, 1, EvaluatingStage, done)), cancel);
        }
        bool chart = LayerErrorChart.Write(Path.Combine(writer.Folder, LayerErrorChart.FileName), result.Layers, model.Config.NumLayers);
        writer.Commit(Report(request, recipe, model, result, linearBits, comparison, chart));
        long compressed = Directory.EnumerateFiles(request.Output, "*.safetensors").Sum(f => new FileInfo(f).Length);
        return new CompressionSummary(result, model.BytesOnDisk, compressed, linearBits, comparison);
    }

    /// <summary>The stage <see cref="PipelineProgress"/> reports while the held-out comparison runs (Done = fraction).</summary>
    public const string EvaluatingStage = "evaluating";

    private static string Report(CompressionRequest request, Recipe recipe, LoadedModel model, PipelineResult result, double linearBits, BeforeAfter? comparison, bool chart)
    {
        var s = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        s.AppendLine($"# LlmShrink compression report");
        s.AppendLine();
        s.AppendLine($"| | |");
        s.AppendLine($"|---|---|");
        s.AppendLine($"| model | `{request.Model}` ({model.Config.Architecture}, {model.Config.NumLayers} layers) |");
        s.AppendLine($"| recipe | `{recipe.Name}` (recipe.yaml) |");
        s.AppendLine($"| calibration | `{request.CalibrationFile}`: {request.Samples} samples × {request.SequenceLength} tokens, seed {request.Seed} |");
        s.AppendLine(inv, $"| time | {result.Elapsed.TotalSeconds:F1} s |");
        s.AppendLine(inv, $"| peak memory (working set) | {result.PeakWorkingSetBytes / (1024.0 * 1024):F0} MiB |");
        s.AppendLine(inv, $"| original size | {model.BytesOnDisk:N0} bytes |");
        s.AppendLine(inv, $"| compressed linear layers | {result.Layers.Select(l => l.Module).Distinct().Count()}, {linearBits:F3} bits per weight stored |");
        if (result.RemovedBlocks.Count > 0)
            s.AppendLine($"| removed blocks | {string.Join(", ", result.RemovedBlocks.Order())} of {model.Config.NumLayers} (the rest renumbered) |");
        if (!result.Config.IsUniform || result.Config.IntermediateSize != model.Config.IntermediateSize || result.Config.NumKvHeads != model.Config.NumKvHeads)
            s.AppendLine($"| block widths | {string.Join(", ", Enumerable.Range(0, result.Config.NumLayers).Select(l => result.Config.Layer(l)).Distinct().Select(w => $"{w.Heads} heads / {w.KvHeads} KV heads / {w.IntermediateSize} MLP channels"))} |");
        s.AppendLine();
        if (comparison is not null)
        {
            s.Append(comparison.Markdown());
            s.AppendLine();
        }
        s.AppendLine("## Layers");
        s.AppendLine();
        if (chart)
        {
            s.AppendLine($"![relative output error of each block linear by depth]({LayerErrorChart.FileName})");
            s.AppendLine();
        }
        s.AppendLine("Relative output error = ‖XWᵀ − XŴᵀ‖² / ‖XWᵀ‖² on up to 256 calibration inputs of each layer, against the");
        s.AppendLine("dense weights the method started from. Bits per weight include group scales and zero points.");
        s.AppendLine();
        s.AppendLine("| module | method | scheme | relative output error | bits/weight |");
        s.AppendLine("|---|---|---|---:|---:|");
        foreach (var l in result.Layers)
            s.AppendLine(inv, $"| {l.Module} | {l.Method} | {l.Scheme} | {(double.IsNaN(l.RelativeOutputError) ? "—" : l.RelativeOutputError.ToString("E3", inv))} | {l.BitsPerWeight:F3} |");
        return s.ToString();
    }
}
