namespace LlmShrink.Compression.Pruning;

/// <summary>
/// ShortGPT's Block Influence (Men et al. 2024, "ShortGPT: Layers in Large Language Models are More Redundant Than You
/// Expect", eq. 1): BI_i = 1 − E_t[cos(x_in,t, x_out,t)] over the calibration tokens t — a block that barely turns its
/// input hidden state changes the model least when removed.
/// </summary>
public sealed class BlockInfluence(int blocks)
{
    private readonly double[] _cosineSum = new double[blocks];
    private long _tokens;

    /// <summary>Adds <paramref name="n"/> tokens' hidden states [n, d] before and after block <paramref name="layer"/>.</summary>
    public void Add(int layer, ReadOnlySpan<float> input, ReadOnlySpan<float> output, int n)
    {
        int d = input.Length / n;
        for (int t = 0; t < n; t++)
            _cosineSum[layer] += System.Numerics.Tensors.TensorPrimitives.CosineSimilarity(input.Slice(t * d, d), output.Slice(t * d, d));
        if (layer == 0) _tokens += n;
    }

    /// <summary>BI of every block.</summary>
    public double[] Scores() => [.. _cosineSum.Select(s => 1 - s / Math.Max(1, _tokens))];
}
