using LlmShrink.Formats;
using LlmShrink.Kernels;

namespace LlmShrink.Model;

/// <summary>
/// A linear layer whose weight stays bfloat16 (<see cref="Bf16MatMul"/>): read in place from the memory mapping when
/// the checkpoint stores BF16, so generation streams half the bytes of float32 and loading copies nothing.
/// </summary>
public sealed unsafe class Bf16Linear : Linear
{
    public Bf16MatMul Weights { get; }
    private readonly object _owner; // the mapped tensor or pinned array the weights live in
    private readonly float[]? _bias;

    /// <summary>A stored BF16 [out, in] tensor; the file must stay open.</summary>
    public Bf16Linear(StoredTensor weight, float[]? bias)
        : this((ushort*)weight.Pointer, weight, checked((int)weight.Columns), checked((int)weight.Rows), bias)
    {
        if (weight.Type != TensorType.BF16) throw new ArgumentException($"{weight} is not BF16", nameof(weight));
    }

    /// <summary>Bfloat16 bits [out, in] in memory (copied into a pinned array).</summary>
    public Bf16Linear(ushort[] weights, int outFeatures, int inFeatures, float[]? bias)
        : this(Pin(weights, outFeatures, inFeatures, out var pinned), pinned, inFeatures, outFeatures, bias) { }

    private Bf16Linear(ushort* weights, object owner, int inFeatures, int outFeatures, float[]? bias) : base(inFeatures, outFeatures)
    {
        if (bias is not null && bias.Length != outFeatures) throw new ArgumentException($"bias has {bias.Length} entries, expected {outFeatures}", nameof(bias));
        Weights = new Bf16MatMul(weights, inFeatures, outFeatures);
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
