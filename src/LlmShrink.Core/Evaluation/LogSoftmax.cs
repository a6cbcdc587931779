namespace LlmShrink.Evaluation;

/// <summary>
/// log p(i) = logit(i) − max − log Σ exp(logit(j) − max), in double: a scored row's negative log-likelihood
/// is summed over hundreds of thousands of positions, so float rounding in the normaliser would show up in the
/// fourth digit of a perplexity.
/// </summary>
public static class LogSoftmax
{
    /// <summary>log Σ exp(logits), computed stably around the maximum.</summary>
    public static double LogSumExp(ReadOnlySpan<float> logits)
    {
        float max = float.NegativeInfinity;
        foreach (float v in logits) if (v > max) max = v;
        double sum = 0;
        foreach (float v in logits) sum += Math.Exp((double)v - max);
        return max + Math.Log(sum);
    }

    /// <summary>−log p(<paramref name="target"/>) under softmax(<paramref name="logits"/>).</summary>
    public static double NegativeLogLikelihood(ReadOnlySpan<float> logits, int target) =>
        LogSumExp(logits) - logits[target];

    /// <summary>Writes log-probabilities of every entry of <paramref name="logits"/> into <paramref name="logProbs"/>.</summary>
    public static void Compute(ReadOnlySpan<float> logits, Span<double> logProbs)
    {
        double lse = LogSumExp(logits);
        for (int i = 0; i < logits.Length; i++) logProbs[i] = logits[i] - lse;
    }

    /// <summary>Index of the largest logit (the first one on ties), i.e. the greedy choice.</summary>
    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        int best = 0;
        for (int i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }
}
