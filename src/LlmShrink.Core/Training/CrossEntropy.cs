using System.Buffers;
using System.Numerics.Tensors;

namespace LlmShrink.Training;

/// <summary>
/// Next-token cross-entropy over the vocabulary, averaged over the N rows: L = (1/N) Σ_i −log softmax(z_i)[y_i], with
/// log softmax(z)_j = z_j − max z − log Σ_k exp(z_k − max z). The gradient is ∂L/∂z_i = (softmax(z_i) − e_{y_i}) / N
/// (llm.c fuses the two the same way, so the [N, vocab] probabilities are never stored).
/// </summary>
public static class CrossEntropy
{
    /// <summary>
    /// Returns L and adds <paramref name="weight"/>·∂L/∂z into <paramref name="dLogits"/> (weight 1/k for each of k
    /// micro-batches of equal size makes their summed gradients the gradient of the whole batch's mean).
    /// </summary>
    public static double Forward(ReadOnlySpan<float> logits, ReadOnlySpan<int> targets, Span<float> dLogits, int vocab, float weight = 1)
    {
        int n = targets.Length;
        if (logits.Length != n * vocab || dLogits.Length != n * vocab) throw new ArgumentException($"logits and their gradient must hold {n}×{vocab} floats");
        var exp = ArrayPool<float>.Shared.Rent(vocab);
        try
        {
            double loss = 0;
            float step = weight / n;
            for (int i = 0; i < n; i++)
            {
                if ((uint)targets[i] >= (uint)vocab) throw new ArgumentOutOfRangeException(nameof(targets), $"target {targets[i]} is outside the vocabulary of {vocab}");
                var z = logits.Slice(i * vocab, vocab);
                var e = exp.AsSpan(0, vocab);
                float max = TensorPrimitives.Max(z);
                TensorPrimitives.Subtract(z, max, e);
                TensorPrimitives.Exp(e, e);
                double sum = TensorPrimitives.Sum<float>(e);
                loss += max + Math.Log(sum) - z[targets[i]];
                // dz = (e / Σe − onehot)·weight/N
                var dz = dLogits.Slice(i * vocab, vocab);
                TensorPrimitives.MultiplyAdd(e, (float)(step / sum), dz, dz);
                dz[targets[i]] -= step;
            }
            return loss / n;
        }
        finally { ArrayPool<float>.Shared.Return(exp); }
    }
}
