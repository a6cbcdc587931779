namespace LlmShrink.Model;

/// <summary>The float32 forward pass of a Llama-family decoder.</summary>
public sealed class Transformer : IDisposable
{
    public Transformer(LoadedModel model, int threads = 0) => throw new NotImplementedException();
    public ModelConfig Config => throw new NotImplementedException();
    public IBlockObserver? Observer { get; set; }
    public KvCache NewCache(int capacity) => throw new NotImplementedException();
    /// <summary>
    /// Runs <paramref name="tokens"/> at positions cache.Length… and appends them to the cache. Writes logits for
    /// every token when <paramref name="logits"/> has tokens×vocab floats, or for the last token only when it has vocab floats.
    /// </summary>
    public void Forward(ReadOnlySpan<int> tokens, KvCache cache, Span<float> logits) => throw new NotImplementedException();
    public void Dispose() { }
}

/// <summary>Keys and values of past positions for every layer.</summary>
public sealed class KvCache
{
    public int Length { get; set; }
    public int Capacity { get; }
    public KvCache(int capacity) => Capacity = capacity;
    public void Clear() => Length = 0;
}
