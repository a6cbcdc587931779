using LlmShrink.Formats;
using LlmShrink.Kernels;

namespace LlmShrink.Model;

/// <summary>
/// A linear layer whose weight stays 16-bit (<see cref="HalfWidthMatMul{TFormat}"/>, BF16 or F16): read in place from the
/// memory mapping, so generation streams half the bytes of float32 and loading copies nothing.
/// </summary>
public sealed unsafe class HalfWidthLinear<TFormat> : Linear where TFormat : struct, IHalfWidthFormat
{
    public HalfWidthMatMul<TFormat> Weights { get; }
    private readonly object _owner; // the mapped tensor or pinned array the weights live in
    private readonly float[]? _bias;

    /// <summary>A stored [out, in] tensor of <typeparamref name="TFormat"/>; the file must stay open.</summary>
    public HalfWidthLinear(StoredTensor weight, float[]? bias)
        : this((ushort*)weight.Pointer, weight, checked((int)weight.Columns), checked((int)weight.Rows), bias)
    {
        if (weight.Type != TFormat.Stored) throw new ArgumentException($"{weight} is not {TFormat.Stored}", nameof(weight));
    }

    /// <summary>16-bit values [out, in] in memory (copied into a pinned array).</summary>
    public HalfWidthLinear(ushort[] weights, int outFeatures, int inFeatures, float[]? bias)
        : this(Pin(weights, outFeatures, inFeatures, out var pinned), pinned, inFeatures, outFeatures, bias) { }

    private HalfWidthLinear(ushort* weights, object owner, int inFeatures, int outFeatures, float[]? bias) : base(inFeatures, outFeatures)
    {
        if (bias is not null && bias.Length != outFeatures) throw new ArgumentException($"bias has {bias.Length} entries, expected {outFeatures}", nameof(bias));
        Weights = new HalfWidthMatMul<TFormat>(weights, inFeatures, outFeatures);
        _owner = owner;
        _bias = bias;
    }

    private static ushort* Pin(ushort[] weights, int outFeatures, int inFeatures, out object pinned)
    {
        if (weights.Length != (long)outFeatures * inFeatures) throw new ArgumentException($"weights must hold {outFeatures}×{inFeatures} values", nameof(weights));
        var address = PinnedCopy<ushort>(weights, out var copy);
        pinned = copy;
        return address;
    }

    public override long WeightBytes => 2L * InFeatures * OutFeatures;

    public override void Apply(ReadOnlySpan<float> x, Span<float> y, int n, WorkerPool pool, int threads)
    {
        GC.KeepAlive(_owner);
        Weights.Multiply(x, y, n, pool, threads);
        AddBias(y, n, _bias);
    }
}
