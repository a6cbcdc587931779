using LlmShrink.Formats;
using LlmShrink.Tokenization;

namespace LlmShrink.Evaluation;

/// <summary>What <see cref="TextEvaluation.Run"/> measured: the scores, the windows' statistics, and the file's token count.</summary>
public sealed record TextEvaluationResult(PerplexityResult Result, WindowScorer Scorer, long Tokens);

/// <summary>
/// Perplexity (and KL against a reference) of a text file of any length: the file is read and tokenized piece by piece
/// (<see cref="StreamingEncoder"/>) and each window is scored as soon as it fills, so memory holds one window and one
/// block of text. The whole file is always tokenized — a window limit only stops the scoring — so the reported token
/// count is the file's, as llama.cpp's perplexity tool reports it.
/// </summary>
public static class TextEvaluation
{
    /// <param name="progress">Called with the fraction done: windows scored out of the limit when there is one, else the
    /// fraction of the file read.</param>
    public static TextEvaluationResult Run(string path, ITextTokenizer tokenizer, int context, PerplexityProtocol protocol, int? replaceFirstWithBos,
        ILogitModel model, ILogitModel? reference = null, int maxWindows = int.MaxValue, Action<double>? progress = null, CancellationToken cancellation = default)
    {
        var scorer = new WindowScorer(context, protocol, replaceFirstWithBos, model, reference);
        using var reader = TextFile.OpenReader(path, "evaluation text");
        var encoder = new StreamingEncoder(tokenizer, reader, tokenizer.AddBos);
        long length = Math.Max(1, reader.BaseStream.Length);
        var window = new int[context];
        int filled = 0;
        long tokens = 0;
        while (TextFile.Read(path, "evaluation text", encoder.Next) is { } piece)
        {
            cancellation.ThrowIfCancellationRequested();
            tokens += piece.Length;
            for (int i = 0; i < piece.Length;)
            {
                int take = Math.Min(piece.Length - i, context - filled);
                if (scorer.Windows < maxWindows) piece.AsSpan(i, take).CopyTo(window.AsSpan(filled));
                filled += take;
                i += take;
                if (filled < context) continue;
                if (scorer.Windows < maxWindows) scorer.Score(window, cancellation);
                filled = 0;
            }
            progress?.Invoke(maxWindows == int.MaxValue ? reader.BaseStream.Position / (double)length : scorer.Windows / (double)maxWindows);
        }
        if (scorer.Windows == 0) throw ShrinkException.InFile(path, $"only {tokens} tokens, fewer than one window of --ctx {context}");
        return new TextEvaluationResult(scorer.Result(), scorer, tokens);
    }
}
