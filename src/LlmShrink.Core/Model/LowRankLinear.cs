using System.Runtime.CompilerServices;
using LlmShrink.Kernels;

namespace LlmShrink.Model;

/// <summary>
/// A weight factored as W ≈ U·V with U [out, rank] and V [rank, in] (truncated SVD and its relatives):
/// y = (x·Vᵀ)·Uᵀ, two thin matmuls costing rank·(in + out) per row instead of in·out.
/// </summary>
public sealed unsafe class LowRankLinear : Linear
{
    public int Rank { get; }
    private readonly float[] _u, _v; // pinned
    private readonly float* _uPointer, _vPointer;
    private readonly float[]? _bias;

    [ThreadStatic] private static float[]? t_inner;

    /// <param name="u">[out, rank].</param>
    /// <param name="v">[rank, in].</param>
    public LowRankLinear(int inFeatures, int outFeatures, int rank, ReadOnlySpan<float> u, ReadOnlySpan<float> v, float[]? bias = null)
        : base(inFeatures, outFeatures)
    {
        if (inFeatures <= 0 || outFeatures <= 0 || rank <= 0) throw new ArgumentException("dimensions and rank must be positive");
        if (u.Length != (long)outFeatures * rank) throw new ArgumentException($"U has {u.Length} entries, expected {outFeatures}×{rank}", nameof(u));
        if (v.Length != (long)rank * inFeatures) throw new ArgumentException($"V has {v.Length} entries, expected {rank}×{inFeatures}", nameof(v));
        if (bias is not null && bias.Length != outFeatures) throw new ArgumentException($"bias has {bias.Length} entries, expected {outFeatures}", nameof(bias));
        Rank = rank;
        _u = GC.AllocateUninitializedArray<float>(u.Length, pinned: true);
        _v = GC.AllocateUninitializedArray<float>(v.Length, pinned: true);
        u.CopyTo(_u);
        v.CopyTo(_v);
        _uPointer = (float*)Unsafe.AsPointer(ref _u[0]);
        _vPointer = (float*)Unsafe.AsPointer(ref _v[0]);
        _bias = bias;
    }

    /// <summary>The two float32 factors.</summary>
    public override long WeightBytes => 4L * Rank * (InFeatures + OutFeatures);

    public override void Apply(ReadOnlySpan<float> x, Span<float> y, int n, WorkerPool pool, int threads)
    {
        if (t_inner is null || t_inner.Length < n * Rank) t_inner = new float[n * Rank];
        var inner = t_inner.AsSpan(0, n * Rank);
        MatMul.Multiply(x, _vPointer, inner, n, InFeatures, Rank, pool, threads);
        MatMul.Multiply(inner, _uPointer, y, n, Rank, OutFeatures, pool, threads);
        AddBias(y, n, _bias);
    }
}
