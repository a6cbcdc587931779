using System.Globalization;
using System.Text;
using LlmShrink.Model;

namespace LlmShrink.Evaluation;

/// <summary>One model's side of a before/after comparison.</summary>
public sealed record ModelFigures(long BytesOnDisk, double BitsPerWeight, double Perplexity, double TokensPerSecond);

/// <summary>
/// The original and the compressed model on the same held-out text: size, bits per weight (all tensors), perplexity
/// (llama.cpp's protocol, so it compares with llama-perplexity), KL(original ‖ compressed) and top-1 agreement per token,
/// and generation speed on this machine.
/// </summary>
public sealed record BeforeAfter(string Data, long Tokens, PerplexityResult Scores, ModelFigures Original, ModelFigures Compressed)
{
    public double MeanKl => Scores.MeanKlDivergence!.Value;
    public double Top1AgreementPercent => Scores.Top1AgreementPercent!.Value;

    /// <summary>Both models evaluated together (the original as the reference), then each one's decode speed.</summary>
    public static BeforeAfter Measure(LoadedModel original, LoadedModel compressed, string data, int context, int maxWindows, int threads,
        Action<double>? progress = null, CancellationToken cancellation = default)
    {
        var tokenizer = original.RequireTokenizer();
        int? bos = tokenizer.AddBos ? tokenizer.BosId : null;
        using var before = new Transformer(original, threads);
        using var after = new Transformer(compressed, threads);
        var evaluation = TextEvaluation.Run(data, tokenizer, context, PerplexityProtocol.LlamaCpp, bos,
            new TransformerLogitModel(after, context), new TransformerLogitModel(before, context), maxWindows, progress, cancellation);
        var r = evaluation.Result;
        ModelFigures Figures(LoadedModel m, Transformer t, double perplexity) =>
            new(m.BytesOnDisk, ModelStatistics.Of(m).BitsPerWeight, perplexity, DecodeSpeed.TokensPerSecond(t, cancellation: cancellation));
        return new BeforeAfter(data, evaluation.Tokens, r, Figures(original, before, r.ReferencePerplexity!.Value), Figures(compressed, after, r.Perplexity));
    }

    /// <summary>The rows of the table: what, before, after.</summary>
    public IReadOnlyList<(string What, string Before, string After)> Rows()
    {
        var inv = CultureInfo.InvariantCulture;
        string Mib(long bytes) => (bytes / (1024.0 * 1024)).ToString("F2", inv) + " MiB";
        return
        [
            ("size on disk", Mib(Original.BytesOnDisk), $"{Mib(Compressed.BytesOnDisk)} ({(double)Compressed.BytesOnDisk / Original.BytesOnDisk:P1})"),
            ("bits per weight (all tensors)", Original.BitsPerWeight.ToString("F3", inv), Compressed.BitsPerWeight.ToString("F3", inv)),
            ("perplexity", Original.Perplexity.ToString("F4", inv), string.Create(inv, $"{Compressed.Perplexity:F4} ({(Compressed.Perplexity / Original.Perplexity - 1) * 100:+0.00;-0.00} %)")),
            ("KL(original ‖ compressed), nats/token", "0", MeanKl.ToString("E3", inv)),
            ("top-1 agreement with the original", "100 %", Top1AgreementPercent.ToString("F2", inv) + " %"),
            ("generation speed (this machine)", Original.TokensPerSecond.ToString("F1", inv) + " tokens/s", Compressed.TokensPerSecond.ToString("F1", inv) + " tokens/s"),
        ];
    }

    /// <summary>The comparison as a report.md section.</summary>
    public string Markdown()
    {
        var s = new StringBuilder();
        s.AppendLine("## Before and after, on held-out text");
        s.AppendLine();
        s.AppendLine(string.Create(CultureInfo.InvariantCulture,
            $"`{Data}`: {Tokens:N0} tokens, {Scores.Windows} windows of {Scores.Context} scored as llama.cpp's perplexity tool does (second half of each window, BOS first), {Scores.ScoredPositions:N0} predictions."));
        s.AppendLine();
        s.AppendLine("| | original | compressed |");
        s.AppendLine("|---|---:|---:|");
        foreach (var (what, before, after) in Rows()) s.AppendLine($"| {what} | {before} | {after} |");
        return s.ToString();
    }
}
