using System.Numerics.Tensors;
using LlmShrink.Kernels;

namespace LlmShrink.Model;

/// <summary>
/// A compressed layer plus a low-rank correction of its error (EoRA, Liu et al. 2024): y = base(x) + (x·Aᵀ)·Bᵀ, with
/// A [rank, in] and B [out, rank] run as the two thin matmuls of a <see cref="LowRankLinear"/> (U = B, V = A). The base
/// keeps its own kernel (packed GPTQ, ggml blocks, …) and its bias; the correction has none.
/// </summary>
public sealed class CompensatedLinear : Linear
{
    private readonly Linear _base;
    private readonly LowRankLinear _correction;

    [ThreadStatic] private static float[]? t_correction;

    public CompensatedLinear(Linear baseLayer, LowRankLinear correction) : base(baseLayer.InFeatures, baseLayer.OutFeatures)
    {
        if (correction.InFeatures != baseLayer.InFeatures || correction.OutFeatures != baseLayer.OutFeatures)
            throw new ArgumentException($"the correction is [{correction.OutFeatures}, {correction.InFeatures}] but the layer is [{baseLayer.OutFeatures}, {baseLayer.InFeatures}]", nameof(correction));
        _base = baseLayer;
        _correction = correction;
    }

    /// <summary>The base layer's stored form and the two float32 factors.</summary>
    public override long WeightBytes => _base.WeightBytes + _correction.WeightBytes;

    public override void Apply(ReadOnlySpan<float> x, Span<float> y, int n, WorkerPool pool, int threads)
    {
        int outputs = n * OutFeatures;
        if (t_correction is null || t_correction.Length < outputs) t_correction = new float[outputs];
        var correction = t_correction.AsSpan(0, outputs);
        _base.Apply(x, y, n, pool, threads);
        _correction.Apply(x, correction, n, pool, threads);
        TensorPrimitives.Add(y[..outputs], correction, y[..outputs]);
    }
}
