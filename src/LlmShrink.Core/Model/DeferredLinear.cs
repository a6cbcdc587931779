using LlmShrink.Kernels;

namespace LlmShrink.Model;

/// <summary>
/// A layer built on its first use, for a choice that has to read the weights (whether an F16 tensor holds only finite
/// values, <see cref="FiniteFloat16"/>): building a transformer then touches no weight page, so a compression run still
/// streams the model block by block and a 7B F16 model does not read 14 GB before its first token.
/// </summary>
public sealed class DeferredLinear : Linear
{
    private readonly Lazy<Linear> _layer;
    private readonly long _weightBytes;

    /// <param name="build">Builds the layer (once, thread-safe); it must have the given shape.</param>
    public DeferredLinear(int inFeatures, int outFeatures, long weightBytes, Func<Linear> build) : base(inFeatures, outFeatures)
    {
        _weightBytes = weightBytes;
        _layer = new Lazy<Linear>(() =>
        {
            var layer = build();
            if (layer.InFeatures != inFeatures || layer.OutFeatures != outFeatures)
                throw new InvalidOperationException($"deferred layer built as {layer.OutFeatures}×{layer.InFeatures}, expected {outFeatures}×{inFeatures}");
            return layer;
        });
    }

    /// <summary>The layer itself (built now if it was not yet).</summary>
    public Linear Layer => _layer.Value;

    public override long WeightBytes => _weightBytes;

    public override void Apply(ReadOnlySpan<float> x, Span<float> y, int n, WorkerPool pool, int threads) => _layer.Value.Apply(x, y, n, pool, threads);
}
