namespace LlmShrink.Evaluation;

/// <summary>How a long token sequence is cut into windows and which predictions in each window count.</summary>
public enum PerplexityProtocol
{
    /// <summary>
    /// GPTQ paper (Frantar et al., 2022, §4): non-overlapping windows of n tokens (the remainder dropped), each run
    /// from an empty context, every next-token prediction in the window scored (n − 1 per window).
    /// </summary>
    Standard,
    /// <summary>
    /// llama.cpp's perplexity tool: non-overlapping chunks of n tokens whose first token is replaced by BOS, scoring
    /// only the second half (logits at positions n/2 … n−2 against tokens n/2+1 … n−1) so every scored prediction
    /// has at least n/2 tokens of context.
    /// </summary>
    LlamaCpp,
}

/// <summary>
/// <paramref name="Length"/> tokens starting at <paramref name="Start"/>, run from an empty context; logits at
/// positions <paramref name="FirstScored"/> … Length−2 are scored against the tokens one position later.
/// </summary>
public readonly record struct EvalWindow(int Start, int Length, int FirstScored)
{
    public int ScoredCount => Length - 1 - FirstScored;
}

/// <summary>Outcome of an evaluation; the reference fields are null unless a reference model was compared.</summary>
public sealed record PerplexityResult
{
    public required PerplexityProtocol Protocol { get; init; }
    public required int Context { get; init; }
    public required int Windows { get; init; }
    public required long ScoredPositions { get; init; }
    /// <summary>Mean negative log-likelihood (nats per token) of the model.</summary>
    public required double MeanNll { get; init; }
    public double Perplexity => Math.Exp(MeanNll);
    public double? ReferenceMeanNll { get; init; }
    public double? ReferencePerplexity => ReferenceMeanNll is { } nll ? Math.Exp(nll) : null;
    /// <summary>Mean over scored positions of KL(P_ref ‖ P_model), in nats.</summary>
    public double? MeanKlDivergence { get; init; }
    /// <summary>Percentage of scored positions where both models' most likely next token is the same.</summary>
    public double? Top1AgreementPercent { get; init; }
}

/// <summary>Perplexity = exp(mean negative log-likelihood of each next token), under either protocol.</summary>
public static class Perplexity
{
    /// <summary>Logit rows held at once (rows × vocab floats): bounds memory for 128k-token vocabularies.</summary>
    private const int MaxLogitFloats = 1 << 24;

    /// <summary>The windows <paramref name="protocol"/> evaluates on <paramref name="tokenCount"/> tokens, at most <paramref name="maxWindows"/>.</summary>
    public static EvalWindow[] Windows(int tokenCount, int context, PerplexityProtocol protocol, int maxWindows = int.MaxValue)
    {
        if (context < 2) throw new ArgumentOutOfRangeException(nameof(context), "a window needs at least 2 tokens");
        int count = Math.Min(tokenCount / context, maxWindows);
        int firstScored = protocol == PerplexityProtocol.LlamaCpp ? context / 2 : 0;
        var windows = new EvalWindow[Math.Max(count, 0)];
        for (int i = 0; i < windows.Length; i++) windows[i] = new EvalWindow(i * context, context, firstScored);
        return windows;
    }

    /// <summary>
    /// Scores <paramref name="model"/> (and optionally <paramref name="reference"/>, fed the very same windows) on
    /// <paramref name="tokens"/>. <paramref name="replaceFirstWithBos"/> is the BOS id written over each window's first
    /// token (llama.cpp does this when the vocabulary adds BOS), or null to leave windows as they are.
    /// </summary>
    public static PerplexityResult Evaluate(
        ReadOnlySpan<int> tokens, int context, PerplexityProtocol protocol, int? replaceFirstWithBos,
        ILogitModel model, ILogitModel? reference = null, int maxWindows = int.MaxValue,
        Action<int>? windowDone = null, CancellationToken cancellation = default)
    {
        int vocab = model.VocabSize;
        if (reference is not null && reference.VocabSize != vocab)
            throw new ArgumentException($"vocabularies differ: model {vocab}, reference {reference.VocabSize}");
        foreach (int t in tokens)
            if ((uint)t >= (uint)vocab) throw new ArgumentException($"token id {t} is outside the vocabulary of {vocab}");

        var windows = Windows(tokens.Length, context, protocol, maxWindows);
        if (windows.Length == 0) throw new ArgumentException($"{tokens.Length} tokens do not fill one window of {context}");

        int rowsPerFeed = Math.Clamp(MaxLogitFloats / vocab, 1, context);
        var modelLogits = new float[rowsPerFeed * vocab];
        var referenceLogits = reference is null ? null : new float[rowsPerFeed * vocab];
        var window = new int[context];

        double nll = 0, referenceNll = 0, kl = 0;
        long scored = 0, sameTop1 = 0;
        for (int w = 0; w < windows.Length; w++)
        {
            var win = windows[w];
            tokens.Slice(win.Start, win.Length).CopyTo(window);
            if (replaceFirstWithBos is { } bos) window[0] = bos;

            model.Reset();
            reference?.Reset();
            // The unscored prefix only builds context: no logits are needed for it.
            var prefix = window.AsSpan(0, win.FirstScored);
            model.Feed(prefix, Span<float>.Empty);
            reference?.Feed(prefix, Span<float>.Empty);

            // The last token of a window predicts nothing that is scored, so it is never run.
            for (int pos = win.FirstScored; pos < win.Length - 1; pos += rowsPerFeed)
            {
                cancellation.ThrowIfCancellationRequested();
                int rows = Math.Min(rowsPerFeed, win.Length - 1 - pos);
                var piece = window.AsSpan(pos, rows);
                model.Feed(piece, modelLogits.AsSpan(0, rows * vocab));
                reference?.Feed(piece, referenceLogits.AsSpan(0, rows * vocab));
                for (int r = 0; r < rows; r++)
                {
                    int target = window[pos + r + 1];
                    var row = modelLogits.AsSpan(r * vocab, vocab);
                    nll += LogSoftmax.NegativeLogLikelihood(row, target);
                    if (referenceLogits is not null)
                    {
                        var refRow = referenceLogits.AsSpan(r * vocab, vocab);
                        referenceNll += LogSoftmax.NegativeLogLikelihood(refRow, target);
                        kl += KlDivergence.Compute(refRow, row);
                        if (LogSoftmax.ArgMax(refRow) == LogSoftmax.ArgMax(row)) sameTop1++;
                    }
                }
                scored += rows;
            }
            windowDone?.Invoke(w + 1);
        }

        return new PerplexityResult
        {
            Protocol = protocol,
            Context = context,
            Windows = windows.Length,
            ScoredPositions = scored,
            MeanNll = nll / scored,
            ReferenceMeanNll = reference is null ? null : referenceNll / scored,
            MeanKlDivergence = reference is null ? null : kl / scored,
            Top1AgreementPercent = reference is null ? null : 100.0 * sameTop1 / scored,
        };
    }
}
