using LlmShrink.Model;

namespace LlmShrink.Evaluation;

/// <summary>An <see cref="ILogitModel"/> backed by the forward pass and one KV cache.</summary>
public sealed class TransformerLogitModel : ILogitModel
{
    private readonly Transformer _transformer;
    private readonly KvCache _cache;
    private readonly float[] _lastRow;

    public TransformerLogitModel(Transformer transformer, int contextLength)
    {
        _transformer = transformer;
        _cache = transformer.NewCache(contextLength);
        _lastRow = new float[transformer.Config.VocabSize];
    }

    public int VocabSize => _transformer.Config.VocabSize;

    public void Reset() => _cache.Clear();

    public void Feed(ReadOnlySpan<int> tokens, Span<float> logits)
    {
        if (tokens.IsEmpty) return;
        // The forward pass always produces at least the last row; callers that need none get it in a scratch row.
        _transformer.Forward(tokens, _cache, logits.IsEmpty ? _lastRow : logits);
    }
}
