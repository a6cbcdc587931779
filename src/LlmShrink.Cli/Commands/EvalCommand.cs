using System.CommandLine;
using System.Diagnostics;
using LlmShrink.Evaluation;
using LlmShrink.Formats;
using LlmShrink.Model;
using Spectre.Console;

namespace LlmShrink.Cli.Commands;

/// <summary>
/// <c>llmshrink eval MODEL --data FILE --ctx N</c>: perplexity on a text file under the standard (GPTQ) or
/// llama.cpp protocol; with <c>--reference</c>, also KL divergence and top-1 agreement against another model.
/// </summary>
internal static class EvalCommand
{
    public static Command Create(CancellationToken cancellation)
    {
        var model = new Argument<string>("model") { Description = "Model to evaluate" };
        var data = new Option<string>("--data") { Description = "Text file to score", Required = true };
        var context = new Option<int>("--ctx") { Description = "Window length in tokens", DefaultValueFactory = _ => 512 };
        var protocol = new Option<string>("--protocol") { Description = "standard (GPTQ: every token of each window) or llamacpp (llama.cpp: second half, BOS first)", DefaultValueFactory = _ => "standard" };
        protocol.AcceptOnlyFromAmong("standard", "llamacpp");
        var maxChunks = new Option<int?>("--max-chunks") { Description = "Evaluate at most this many windows" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object to stdout instead of a table" };
        var threads = new Option<int>("--threads") { Description = "Worker threads (0 = all cores)", DefaultValueFactory = _ => 0 };
        var reference = new Option<string?>("--reference") { Description = "Original model to compare with: KL divergence and top-1 agreement" };
        var tokenizerFile = new Option<string?>("--tokenizer") { Description = "Tokenizer file, for llama2.c checkpoints (tokenizer.bin)" };
        var plot = new Option<string?>("--plot") { Description = "Folder for charts: mean NLL by window position; with --reference, the histogram of per-token KL" };
        var command = new Command("eval", "Perplexity of a model on a text file, optionally compared with a reference model")
        {
            model, data, context, protocol, maxChunks, json, threads, reference, tokenizerFile, plot,
        };
        command.SetAction(parse =>
        {
            int ctx = parse.GetValue(context);
            if (ctx < 4) throw new ShrinkException($"--ctx: must be at least 4 tokens (got {ctx})");
            int windowsLimit = parse.GetValue(maxChunks) ?? int.MaxValue;
            if (windowsLimit < 1) throw new ShrinkException($"--max-chunks: must be at least 1 (got {windowsLimit})");
            var chosen = parse.GetValue(protocol) == "llamacpp" ? PerplexityProtocol.LlamaCpp : PerplexityProtocol.Standard;
            string dataPath = parse.GetValue(data)!;
            string modelPath = parse.GetValue(model)!;
            string? referencePath = parse.GetValue(reference);

            TextFile.EnsureText(dataPath, "evaluation text"); // before loading models, so a wrong file fails at once
            using var evaluated = Terminal.LoadModel(modelPath, cancellation, parse.GetValue(tokenizerFile));
            using var referenceModel = referencePath is null ? null : Terminal.LoadModel(referencePath, cancellation);
            // The chart folder is claimed before the evaluation runs: a bad path fails at once, and an interrupted run leaves nothing.
            using var chartFolder = parse.GetValue(plot) is { } plotPath
                ? new OutputFolder(plotPath, evaluated.Weights.Files.Select(f => f.Path).Append(evaluated.Source)
                    .Concat(referenceModel is null ? [] : referenceModel.Weights.Files.Select(f => f.Path).Append(referenceModel.Source)).Append(dataPath))
                : null;
            // Both models see exactly the same token ids: the reference's tokenizer (the original model's) when comparing.
            var tokenizer = (referenceModel ?? evaluated).RequireTokenizer();
            if (referenceModel is not null && referenceModel.Config.VocabSize != evaluated.Config.VocabSize)
                throw ShrinkException.InFile(modelPath, $"vocabulary of {evaluated.Config.VocabSize} tokens differs from the reference's {referenceModel.Config.VocabSize}");
            // llama.cpp writes BOS over each chunk's first token when the vocabulary adds BOS.
            int? bos = chosen == PerplexityProtocol.LlamaCpp && tokenizer.AddBos ? tokenizer.BosId : null;

            int threadCount = parse.GetValue(threads);
            if (threadCount < 0) throw new ShrinkException($"--threads: must not be negative (got {threadCount})");
            using var transformer = new Transformer(evaluated, threadCount);
            using var referenceTransformer = referenceModel is null ? null : new Transformer(referenceModel, threadCount);
            var clock = Stopwatch.StartNew();
            var evaluation = Terminal.WithProgress("perplexity", 1, report => TextEvaluation.Run(
                dataPath, tokenizer, ctx, chosen, bos,
                new TransformerLogitModel(transformer, ctx),
                referenceTransformer is null ? null : new TransformerLogitModel(referenceTransformer, ctx),
                windowsLimit, report, cancellation));
            var result = evaluation.Result;
            long tokens = evaluation.Tokens;
            double seconds = clock.Elapsed.TotalSeconds;
            long peakMemory = Process.GetCurrentProcess().PeakWorkingSet64;
            IReadOnlyList<string> charts = [];
            if (chartFolder is not null)
            {
                var names = EvalCharts.Write(chartFolder.Path, evaluation.Scorer, modelPath);
                chartFolder.Commit();
                charts = [.. names.Select(name => Path.Combine(parse.GetValue(plot)!, name))];
            }

            if (parse.GetValue(json)) Terminal.WriteJson(new
            {
                model = modelPath,
                reference = referencePath,
                data = dataPath,
                protocol = parse.GetValue(protocol),
                context = ctx,
                tokens,
                windows = result.Windows,
                scored_positions = result.ScoredPositions,
                mean_nll = result.MeanNll,
                perplexity = result.Perplexity,
                reference_perplexity = result.ReferencePerplexity,
                mean_kl_divergence = result.MeanKlDivergence,
                top1_agreement_percent = result.Top1AgreementPercent,
                seconds,
                peak_memory_bytes = peakMemory,
                charts,
            });
            else Print(modelPath, referencePath, dataPath, tokens, result, seconds, peakMemory, charts);
            return 0;
        });
        return command;
    }

    private static void Print(string model, string? reference, string data, long tokens, PerplexityResult r, double seconds, long peakMemory, IReadOnlyList<string> charts)
    {
        var table = Terminal.KeyValueTable("perplexity")
            .AddText("model", model)
            .AddText("data", $"{data} ({tokens:N0} tokens)")
            .AddText("protocol", $"{r.Protocol}, context {r.Context}")
            .AddText("windows / scored tokens", $"{r.Windows:N0} / {r.ScoredPositions:N0}")
            .AddText("perplexity", $"{r.Perplexity:F4}")
            .AddText("mean NLL (nats/token)", $"{r.MeanNll:F5}");
        if (reference is not null)
        {
            table.AddText("reference", reference)
                .AddText("reference perplexity", $"{r.ReferencePerplexity:F4}")
                .AddText("mean KL(ref ‖ model) (nats)", $"{r.MeanKlDivergence:F6}")
                .AddText("top-1 agreement", $"{r.Top1AgreementPercent:F2} %");
        }
        table.AddText("time", $"{seconds:F1} s ({r.ScoredPositions / seconds:F0} scored tokens/s)")
            .AddText("peak memory", Terminal.Bytes(peakMemory));
        foreach (string chart in charts) table.AddText("chart", chart);
        Terminal.Stdout().Write(table);
    }
}
