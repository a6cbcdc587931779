using LlmShrink.Kernels;

namespace LlmShrink.Model;

/// <summary>
/// A weight factored as W ≈ U·V with U [out, rank] and V [rank, in] (truncated SVD and its relatives):
/// y = (x·Vᵀ)·Uᵀ, two thin matmuls streaming rank·(in + out) weights per row instead of in·out. Each factor is a layer of
/// its own over its stored form (F16 and BF16 factors run on the 16-bit kernel in place), so the saving in bytes is a saving in
/// decode time too.
/// </summary>
public sealed class LowRankLinear : Linear
{
    private readonly Linear _v, _u;
    private readonly float[]? _bias;

    [ThreadStatic] private static float[]? t_inner;

    public int Rank => _v.OutFeatures;

    /// <param name="v">x → x·Vᵀ: [rank, in].</param>
    /// <param name="u">[rank] → [out]: U [out, rank], without bias.</param>
    public LowRankLinear(Linear v, Linear u, float[]? bias = null) : base(v.InFeatures, u.OutFeatures)
    {
        if (u.InFeatures != v.OutFeatures) throw new ArgumentException($"U takes {u.InFeatures} inputs but V gives {v.OutFeatures}", nameof(u));
        if (bias is not null && bias.Length != u.OutFeatures) throw new ArgumentException($"bias has {bias.Length} entries, expected {u.OutFeatures}", nameof(bias));
        (_v, _u, _bias) = (v, u, bias);
    }

    /// <summary>Over float32 factors held in memory.</summary>
    /// <param name="u">[out, rank].</param>
    /// <param name="v">[rank, in].</param>
    public LowRankLinear(int inFeatures, int outFeatures, int rank, float[] u, float[] v, float[]? bias = null)
        : this(new DenseLinear(v, rank, inFeatures, null), new DenseLinear(u, outFeatures, rank, null), bias)
    {
    }

    public override long WeightBytes => _v.WeightBytes + _u.WeightBytes;

    public override void Apply(ReadOnlySpan<float> x, Span<float> y, int n, WorkerPool pool, int threads)
    {
        if (t_inner is null || t_inner.Length < n * Rank) t_inner = new float[n * Rank];
        var inner = t_inner.AsSpan(0, n * Rank);
        _v.Apply(x, inner, n, pool, threads);
        _u.Apply(inner, y, n, pool, threads);
        AddBias(y, n, _bias);
    }
}
