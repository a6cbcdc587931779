using System.Numerics.Tensors;
using LlmShrink.Kernels;

namespace LlmShrink.Training;

/// <summary>
/// Causal grouped-query attention (Vaswani et al. 2017; Ainslie et al. 2023) over a batch of sequences, each starting at
/// position 0. For query head h of token t, key/value head g = h / (heads / kvHeads):
/// S_ts = q_t·k_s / √d, P_t = softmax_s(S_t) over s ≤ t (and s &gt; t − window with a sliding window), o_t = Σ_s P_ts v_s.
/// The forward keeps P ([batch, heads, T, T], entries outside the causal window unused). Backward (per head, with dO given):
/// dP_ts = dO_t·v_s; dS_ts = P_ts (dP_ts − Σ_u P_tu dP_tu) (the softmax Jacobian); dq_t = Σ_s dS_ts k_s / √d;
/// dk_s = Σ_t dS_ts q_t / √d; dv_s = Σ_t P_ts dO_t — dk and dv summed over the query heads that share g.
/// Layouts are the inference ones: q and o [batch·T, heads·d], k and v [batch·T, kvHeads·d], row-major.
/// </summary>
public sealed class AttentionOp(int heads, int kvHeads, int headDim, int? window)
{
    private readonly float _scale = 1f / MathF.Sqrt(headDim);

    public int ProbabilityCount(int batch, int seqLen) => batch * heads * seqLen * seqLen;

    private int First(int t) => window is int w ? Math.Max(0, t - w + 1) : 0;

    public void Forward(float[] q, float[] k, float[] v, float[] output, float[] probabilities, int batch, int seqLen)
    {
        int d = headDim, qDim = heads * d, kvDim = kvHeads * d, group = heads / kvHeads;
        Parallel.For(0, batch * heads, item =>
        {
            int b = item / heads, h = item % heads, g = h / group;
            for (int t = 0; t < seqLen; t++)
            {
                int first = First(t), row = b * seqLen + t;
                var scores = probabilities.AsSpan(((item * seqLen) + t) * seqLen + first, t - first + 1);
                var qt = q.AsSpan(row * qDim + h * d, d);
                for (int s = first; s <= t; s++)
                    scores[s - first] = TensorPrimitives.Dot(qt, k.AsSpan((b * seqLen + s) * kvDim + g * d, d)) * _scale;
                Softmax.Apply(scores);
                var o = output.AsSpan(row * qDim + h * d, d);
                o.Clear();
                for (int s = first; s <= t; s++)
                    TensorPrimitives.MultiplyAdd(v.AsSpan((b * seqLen + s) * kvDim + g * d, d), scores[s - first], o, o);
            }
        });
    }

    /// <summary>Adds the gradients with respect to q, k and v (after RoPE) into <paramref name="dq"/>, <paramref name="dk"/>, <paramref name="dv"/>.</summary>
    public void Backward(float[] dOutput, float[] q, float[] k, float[] v, float[] probabilities, float[] dq, float[] dk, float[] dv, int batch, int seqLen)
    {
        int d = headDim, qDim = heads * d, kvDim = kvHeads * d, group = heads / kvHeads;
        // One work item per (sequence, key/value head): the query heads of a group all add into the same dk, dv rows.
        Parallel.For(0, batch * kvHeads, item =>
        {
            int b = item / kvHeads, g = item % kvHeads;
            var dS = new float[seqLen];
            for (int h = g * group; h < (g + 1) * group; h++)
                for (int t = 0; t < seqLen; t++)
                {
                    int first = First(t), row = b * seqLen + t, count = t - first + 1;
                    var p = probabilities.AsSpan((((b * heads) + h) * seqLen + t) * seqLen + first, count);
                    var dOt = dOutput.AsSpan(row * qDim + h * d, d);
                    var ds = dS.AsSpan(0, count);
                    for (int s = first; s <= t; s++) ds[s - first] = TensorPrimitives.Dot(dOt, v.AsSpan((b * seqLen + s) * kvDim + g * d, d));
                    float weighted = TensorPrimitives.Dot(p, ds); // Σ_u P_tu dP_tu
                    for (int i = 0; i < count; i++) ds[i] = p[i] * (ds[i] - weighted) * _scale;
                    var qt = q.AsSpan(row * qDim + h * d, d);
                    var dqt = dq.AsSpan(row * qDim + h * d, d);
                    for (int s = first; s <= t; s++)
                    {
                        int kv = (b * seqLen + s) * kvDim + g * d;
                        TensorPrimitives.MultiplyAdd(k.AsSpan(kv, d), ds[s - first], dqt, dqt);
                        TensorPrimitives.MultiplyAdd(qt, ds[s - first], dk.AsSpan(kv, d), dk.AsSpan(kv, d));
                        TensorPrimitives.MultiplyAdd(dOt, p[s - first], dv.AsSpan(kv, d), dv.AsSpan(kv, d));
                    }
                }
        });
    }
}
