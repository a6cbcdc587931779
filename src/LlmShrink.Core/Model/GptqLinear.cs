using LlmShrink.Kernels;

namespace LlmShrink.Model;

/// <summary>A linear layer whose weight is GPTQ group-quantized (2/3/4/8-bit codes); see <see cref="GptqMatMul"/>.</summary>
public sealed class GptqLinear : Linear
{
    public GptqMatMul Weights { get; }
    private readonly float[]? _bias;

    public GptqLinear(GptqMatMul weights, float[]? bias) : base(weights.InDim, weights.OutDim)
    {
        if (bias is not null && bias.Length != weights.OutDim) throw new ArgumentException($"bias has {bias.Length} entries, expected {weights.OutDim}", nameof(bias));
        Weights = weights;
        _bias = bias;
    }

    /// <summary>From unpacked codes [out, in], scales and integer zero-points [groups, out], g_idx [in].</summary>
    public GptqLinear(int bits, int inFeatures, int outFeatures, ReadOnlySpan<byte> codes, ReadOnlySpan<float> scales, ReadOnlySpan<int> zeros,
        ReadOnlySpan<int> groupIndex, float[]? bias)
        : this(new GptqMatMul(bits, inFeatures, outFeatures, codes, scales, zeros, groupIndex), bias) { }

    /// <summary>From GPTQ v1 checkpoint tensors (qweight, qzeros, scales, g_idx); see <see cref="GptqMatMul.FromGptqV1"/>.</summary>
    public static GptqLinear FromGptqV1(int bits, int inFeatures, int outFeatures, ReadOnlySpan<int> qweight, ReadOnlySpan<int> qzeros,
        ReadOnlySpan<Half> scales, ReadOnlySpan<int> groupIndex, float[]? bias) =>
        new(GptqMatMul.FromGptqV1(bits, inFeatures, outFeatures, qweight, qzeros, scales, groupIndex), bias);

    public override long WeightBytes => Weights.WeightBytes;

    public override void Apply(ReadOnlySpan<float> x, Span<float> y, int n, WorkerPool pool, int threads)
    {
        Weights.Multiply(x, y, n, pool, threads);
        AddBias(y, n, _bias);
    }
}
