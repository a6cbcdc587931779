using System.Runtime.CompilerServices;
using LlmShrink.Formats;
using LlmShrink.Kernels;

namespace LlmShrink.Model;

/// <summary>
/// A linear layer y = x·Wᵀ (+ b) over rows of x. An abstract class so that other weight encodings (quantized
/// kernels) can stand in for <see cref="DenseLinear"/> without touching the transformer.
/// </summary>
public abstract class Linear
{
    public int InFeatures { get; }
    public int OutFeatures { get; }

    protected Linear(int inFeatures, int outFeatures)
    {
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
    }

    /// <summary>
    /// Bytes of weight data one application streams from memory (decode is bound by it). Layers that store their
    /// weights in another form override this; the default counts float32.
    /// </summary>
    public virtual long WeightBytes => 4L * InFeatures * OutFeatures;

    /// <summary>y[n, out] = x[n, in]·Wᵀ (+ b).</summary>
    public abstract void Apply(ReadOnlySpan<float> x, Span<float> y, int n, WorkerPool pool, int threads);

    /// <summary>y[i, :] += bias for each of the <paramref name="n"/> rows (nothing when the layer has no bias).</summary>
    protected void AddBias(Span<float> y, int n, float[]? bias)
    {
        if (bias is null) return;
        for (int i = 0; i < n; i++)
            System.Numerics.Tensors.TensorPrimitives.Add(y.Slice(i * OutFeatures, OutFeatures), bias, y.Slice(i * OutFeatures, OutFeatures));
    }

    /// <summary>A pinned copy of weights a layer was handed in memory, and its address (the copy must be kept alive).</summary>
    protected static unsafe T* PinnedCopy<T>(ReadOnlySpan<T> values, out T[] copy) where T : unmanaged
    {
        copy = GC.AllocateUninitializedArray<T>(values.Length, pinned: true);
        values.CopyTo(copy);
        return (T*)Unsafe.AsPointer(ref copy[0]);
    }

    /// <summary>The layer for a stored [out, in] weight (and optional [out] bias), checking the shape.</summary>
    public static unsafe Linear FromStored(StoredTensor weight, float[]? bias, int outFeatures, int inFeatures)
    {
        TensorShapes.Expect(weight, outFeatures, inFeatures);
        if (bias is not null && bias.Length != outFeatures) throw new ArgumentException($"bias has {bias.Length} entries, expected {outFeatures}", nameof(bias));
        // Q4_0, Q8_0, Q4_K, the I-quants but IQ1_S/IQ1_M, BF16 and F16 run on their stored form in place; every other encoding is decoded to float32 once.
        // F16 without infinities or NaNs (every trained model's; one read of the tensor, at first use, to know) widens in a third of the instructions.
        if (GgmlMatMul.Supports(weight.Type)) return new GgmlLinear(weight, bias);
        if (weight.Type == TensorType.BF16) return new HalfWidthLinear<Bfloat16>(weight, bias);
        if (weight.Type == TensorType.F16)
            return new DeferredLinear(inFeatures, outFeatures, 2L * inFeatures * outFeatures, () =>
                FiniteFloat16.HoldsOnlyFinite((ushort*)weight.Pointer, weight.ElementCount) ? new HalfWidthLinear<FiniteFloat16>(weight, bias)
                                                                                          : new HalfWidthLinear<Float16>(weight, bias));
        return new DenseLinear(weight, bias);
    }
}

/// <summary>
/// A float32 weight matrix. F32 tensors are read in place from the memory mapping (no copy); any other stored
/// type is decoded into a pinned float32 array on first use, so building a transformer over an F16/BF16 model
/// costs nothing until a layer runs (the calibration pipeline touches one block at a time).
/// </summary>
public sealed unsafe class DenseLinear : Linear
{
    private float* _weights;
    private float[]? _decoded; // keeps a decoded copy alive; null when reading the mapping
    private readonly StoredTensor? _pending; // a non-F32 tensor not decoded yet
    private readonly float[]? _bias;

    public DenseLinear(StoredTensor weight, float[]? bias) : base(checked((int)weight.Columns), checked((int)weight.Rows))
    {
        if (weight.Type == TensorType.F32) _weights = (float*)weight.Pointer;
        else _pending = weight;
        _bias = bias;
    }

    /// <summary>A layer over float32 weights [out, in] held in memory (e.g. weights a compression method rescaled).</summary>
    public DenseLinear(float[] weights, int outFeatures, int inFeatures, float[]? bias) : base(inFeatures, outFeatures)
    {
        if (weights.Length != (long)outFeatures * inFeatures) throw new ArgumentException($"weights must hold {outFeatures}×{inFeatures} floats", nameof(weights));
        _weights = PinnedCopy<float>(weights, out _decoded);
        _bias = bias;
    }

    public override void Apply(ReadOnlySpan<float> x, Span<float> y, int n, WorkerPool pool, int threads)
    {
        if (_weights == null) Decode();
        MatMul.Multiply(x, _weights, y, n, InFeatures, OutFeatures, pool, threads);
        AddBias(y, n, _bias);
    }

    /// <summary>
    /// Hands the float32 copy decoded from a non-F32 tensor to the caller and forgets it (the layer decodes again if it
    /// runs once more), so a compression method can edit the weights without a second decoded copy; null when there is none.
    /// </summary>
    public float[]? DetachDecoded()
    {
        if (_pending is null || _decoded is null) return null;
        var decoded = _decoded;
        _decoded = null;
        _weights = null;
        return decoded;
    }

    private void Decode()
    {
        var weight = _pending!;
        _decoded = GC.AllocateUninitializedArray<float>(checked((int)weight.ElementCount), pinned: true);
        for (long r = 0; r < weight.Rows; r++) weight.DequantizeRow(r, _decoded.AsSpan(checked((int)(r * InFeatures)), InFeatures));
        _weights = (float*)Unsafe.AsPointer(ref _decoded[0]);
    }
}

/// <summary>Shape checks that turn a malformed checkpoint into a one-line user error.</summary>
public static class TensorShapes
{
    public static void Expect(StoredTensor tensor, params long[] shape)
    {
        if (!tensor.Shape.AsSpan().SequenceEqual(shape))
            throw ShrinkException.InFile(tensor.File.Path,
                $"tensor '{tensor.Name}' has shape [{string.Join(", ", tensor.Shape)}] but the model configuration implies [{string.Join(", ", shape)}]");
    }
}
