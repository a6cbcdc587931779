namespace LlmShrink.Evaluation;

/// <summary>
/// A language model seen as a function from a growing token context to next-token logits — all the evaluation
/// code needs, so tests can drive it with hand-built logits instead of a real forward pass.
/// </summary>
public interface ILogitModel
{
    int VocabSize { get; }

    /// <summary>Forgets the context: the next <see cref="Feed"/> starts at position 0.</summary>
    void Reset();

    /// <summary>
    /// Appends <paramref name="tokens"/> to the context. When <paramref name="logits"/> is not empty it receives one
    /// row of <see cref="VocabSize"/> logits per token (the prediction for the token that follows it).
    /// </summary>
    void Feed(ReadOnlySpan<int> tokens, Span<float> logits);
}
