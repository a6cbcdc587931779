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
    /// <summary>The first window position whose prediction is scored: 0, or the second half under llama.cpp's protocol.</summary>
    public static int FirstScored(int context, PerplexityProtocol protocol) => protocol == PerplexityProtocol.LlamaCpp ? context / 2 : 0;

    /// <summary>The windows <paramref name="protocol"/> evaluates on <paramref name="tokenCount"/> tokens, at most <paramref name="maxWindows"/>.</summary>
    public static EvalWindow[] Windows(int tokenCount, int context, PerplexityProtocol protocol, int maxWindows = int.MaxValue)
    {
        if (context < 2) throw new ArgumentOutOfRangeException(nameof(context), "a window needs at least 2 tokens");
        int count = Math.Min(tokenCount / context, maxWindows);
        int firstScored = FirstScored(context, protocol);
        var windows = new EvalWindow[Math.Max(count, 0)];
        for (int i = 0; i < windows.Length; i++) windows[i] = new EvalWindow(i * context, context, firstScored);
        return windows;
    }

    /// <summary>
    /// Scores <paramref name="model"/> (and optionally <paramref name="reference"/>, fed the very same windows) on
    /// <paramref name="tokens"/>; see <see cref="WindowScorer"/> for <paramref name="replaceFirstWithBos"/>.
    /// </summary>
    public static PerplexityResult Evaluate(
        ReadOnlySpan<int> tokens, int context, PerplexityProtocol protocol, int? replaceFirstWithBos,
        ILogitModel model, ILogitModel? reference = null, int maxWindows = int.MaxValue,
        Action<int>? windowDone = null, CancellationToken cancellation = default)
    {
        var scorer = new WindowScorer(context, protocol, replaceFirstWithBos, model, reference);
        var windows = Windows(tokens.Length, context, protocol, maxWindows);
        if (windows.Length == 0) throw new ArgumentException($"{tokens.Length} tokens do not fill one window of {context}");
        foreach (var window in windows)
        {
            scorer.Score(tokens.Slice(window.Start, window.Length), cancellation);
            windowDone?.Invoke(scorer.Windows);
        }
        return scorer.Result();
    }
}
