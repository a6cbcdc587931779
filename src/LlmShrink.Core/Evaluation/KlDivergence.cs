namespace LlmShrink.Evaluation;

/// <summary>
/// KL(P_ref ‖ P_model) = Σ_i p_ref(i) · (log p_ref(i) − log p_model(i)) between the next-token distributions two
/// models give at the same position: how much information the compressed model loses relative to the original
/// (0 when they agree exactly). Computed from logits in double.
/// </summary>
public static class KlDivergence
{
    public static double Compute(ReadOnlySpan<float> referenceLogits, ReadOnlySpan<float> modelLogits)
    {
        if (referenceLogits.Length != modelLogits.Length)
            throw new ArgumentException($"vocabularies differ: {referenceLogits.Length} vs {modelLogits.Length} logits");
        double refLse = LogSoftmax.LogSumExp(referenceLogits);
        double modelLse = LogSoftmax.LogSumExp(modelLogits);
        double kl = 0;
        for (int i = 0; i < referenceLogits.Length; i++)
        {
            double logRef = referenceLogits[i] - refLse;
            double logModel = modelLogits[i] - modelLse;
            kl += Math.Exp(logRef) * (logRef - logModel);
        }
        // Rounding can leave a tiny negative value for identical distributions; KL itself is never negative.
        return Math.Max(kl, 0);
    }
}
