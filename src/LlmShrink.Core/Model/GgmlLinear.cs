using LlmShrink.Formats;
using LlmShrink.Kernels;

namespace LlmShrink.Model;

/// <summary>
/// A linear layer whose weight stays in its ggml block encoding (Q4_0, Q8_0, Q4_K, the I-quants but IQ1_S/IQ1_M), read in place from the memory
/// mapping and multiplied by <see cref="GgmlMatMul"/> without being expanded.
/// </summary>
public sealed unsafe class GgmlLinear : Linear
{
    public TensorType Type { get; }
    private readonly byte* _blocks;
    private readonly object _owner; // the mapped tensor or pinned array the blocks live in
    private readonly float[]? _bias;

    /// <summary>A stored [out, in] tensor of a type that <see cref="GgmlMatMul.Supports"/>; the file must stay open.</summary>
    public GgmlLinear(StoredTensor weight, float[]? bias)
        : this(weight.Type, weight.Pointer, weight, checked((int)weight.Columns), checked((int)weight.Rows), bias) { }

    /// <summary>Blocks in memory: <paramref name="blocks"/> holds <paramref name="outFeatures"/> rows of <paramref name="inFeatures"/> elements.</summary>
    public GgmlLinear(TensorType type, byte[] blocks, int inFeatures, int outFeatures, float[]? bias)
        : this(type, Pin(blocks, type, inFeatures, outFeatures, out var pinned), pinned, inFeatures, outFeatures, bias) { }

    private GgmlLinear(TensorType type, byte* blocks, object owner, int inFeatures, int outFeatures, float[]? bias) : base(inFeatures, outFeatures)
    {
        if (!GgmlMatMul.Supports(type)) throw new ArgumentException($"{type} has no direct kernel", nameof(type));
        if (bias is not null && bias.Length != outFeatures) throw new ArgumentException($"bias has {bias.Length} entries, expected {outFeatures}", nameof(bias));
        Type = type;
        _blocks = blocks;
        _owner = owner;
        _bias = bias;
    }

    private static byte* Pin(byte[] blocks, TensorType type, int inFeatures, int outFeatures, out object pinned)
    {
        long needed = TensorTypes.ByteCount(type, (long)inFeatures * outFeatures);
        if (blocks.Length != needed) throw new ArgumentException($"{outFeatures}×{inFeatures} {type} needs {needed} bytes, got {blocks.Length}", nameof(blocks));
        var copy = GC.AllocateUninitializedArray<byte>(blocks.Length, pinned: true);
        blocks.CopyTo(copy, 0);
        pinned = copy;
        fixed (byte* p = copy) return p; // pinned for its lifetime
    }

    public override long WeightBytes => TensorTypes.ByteCount(Type, (long)InFeatures * OutFeatures);

    public override void Apply(ReadOnlySpan<float> x, Span<float> y, int n, WorkerPool pool, int threads)
    {
        GgmlMatMul.Multiply(Type, x, _blocks, y, n, InFeatures, OutFeatures, pool, threads);
        AddBias(y, n, _bias);
    }
}
