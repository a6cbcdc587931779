using LlmShrink.Kernels;

namespace LlmShrink.Model;

/// <summary>A linear layer whose weight is 2:4-sparse with 4-bit kept codes (<see cref="Sparse24Int4Matrix"/>, <see cref="Sparse24MatMul"/>).</summary>
public sealed class Sparse24Linear : Linear
{
    public Sparse24Int4Matrix Weights { get; }
    private readonly float[]? _bias;

    public Sparse24Linear(Sparse24Int4Matrix weights, float[]? bias) : base(weights.InDim, weights.OutDim)
    {
        if (bias is not null && bias.Length != weights.OutDim) throw new ArgumentException($"bias has {bias.Length} entries, expected {weights.OutDim}", nameof(bias));
        Weights = weights;
        _bias = bias;
    }

    public override long WeightBytes => Weights.WeightBytes;

    public override void Apply(ReadOnlySpan<float> x, Span<float> y, int n, WorkerPool pool, int threads)
    {
        Sparse24MatMul.Multiply(Weights, x, y, n, pool, threads);
        AddBias(y, n, _bias);
    }
}
