using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
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

    /// <summary>Over 16-bit values [out, in] already in a pinned array, which the layer keeps (no copy).</summary>
    internal static HalfWidthLinear<TFormat> Adopt(ushort[] pinned, int outFeatures, int inFeatures, float[]? bias)
    {
        if (pinned.Length != (long)outFeatures * inFeatures) throw new ArgumentException($"weights must hold {outFeatures}×{inFeatures} values", nameof(pinned));
        return new((ushort*)Unsafe.AsPointer(ref pinned[0]), pinned, inFeatures, outFeatures, bias);
    }

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

/// <summary>Half-width layers over float32 weights held in memory (a compression method's output stored as F16 or BF16).</summary>
public static unsafe class HalfWidthLayers
{
    /// <summary>
    /// Encodes [out, in] float32 weights to <paramref name="type"/> (F16 or BF16) straight into the pinned array the layer
    /// runs on: one half-size copy, where rounding through float32 and pinning that cost two full-size ones (0.8 GB each
    /// for a 7B model's MLP matrix), and the layer computes exactly what the written checkpoint will when it is loaded.
    /// </summary>
    public static Linear Encode(TensorType type, float[] weights, int outFeatures, int inFeatures, float[]? bias)
    {
        var encoded = GC.AllocateUninitializedArray<ushort>(weights.Length, pinned: true);
        TensorEncoding.EncodeRow(type, weights, MemoryMarshal.AsBytes(encoded.AsSpan()));
        return type switch
        {
            TensorType.BF16 => HalfWidthLinear<Bfloat16>.Adopt(encoded, outFeatures, inFeatures, bias),
            TensorType.F16 => FiniteFloat16.HoldsOnlyFinite((ushort*)Unsafe.AsPointer(ref encoded[0]), encoded.Length)
                ? HalfWidthLinear<FiniteFloat16>.Adopt(encoded, outFeatures, inFeatures, bias)
                : HalfWidthLinear<Float16>.Adopt(encoded, outFeatures, inFeatures, bias),
            _ => throw new ArgumentException($"{type} is not a 16-bit float type", nameof(type)),
        };
    }
}
