using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
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
/// <para>The head-sized dot products and multiply-adds are written out over pointers (<see cref="Dot"/>, <see cref="AddScaled"/>):
/// a library call per 32-float vector cost more than its arithmetic (as in the inference <c>Attention</c>), and
/// attention took most of a training step's time on tinylit-8m's shape.</para>
/// </summary>
public sealed unsafe class AttentionOp(int heads, int kvHeads, int headDim, int? window)
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
            fixed (float* pq = q, pk = k, pv = v, po = output, pp = probabilities)
                for (int t = 0; t < seqLen; t++)
                {
                    int first = First(t), row = b * seqLen + t, count = t - first + 1;
                    float* scores = pp + ((long)item * seqLen + t) * seqLen + first;
                    float* qt = pq + (long)row * qDim + h * d;
                    for (int s = first; s <= t; s++) scores[s - first] = Dot(qt, pk + (long)(b * seqLen + s) * kvDim + g * d, d) * _scale;
                    Softmax.Apply(new Span<float>(scores, count));
                    float* o = po + (long)row * qDim + h * d;
                    new Span<float>(o, d).Clear();
                    for (int s = first; s <= t; s++) AddScaled(o, pv + (long)(b * seqLen + s) * kvDim + g * d, scores[s - first], d);
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
            fixed (float* pdO = dOutput, pq = q, pk = k, pv = v, pp = probabilities, pdq = dq, pdk = dk, pdv = dv, ds = dS)
                for (int h = g * group; h < (g + 1) * group; h++)
                    for (int t = 0; t < seqLen; t++)
                    {
                        int first = First(t), row = b * seqLen + t, count = t - first + 1;
                        float* p = pp + (((long)b * heads + h) * seqLen + t) * seqLen + first;
                        float* dOt = pdO + (long)row * qDim + h * d;
                        long kvFirst = (long)(b * seqLen + first) * kvDim + g * d; // key/value head g of position first
                        for (int i = 0; i < count; i++) ds[i] = Dot(dOt, pv + kvFirst + (long)i * kvDim, d);
                        float weighted = TensorPrimitives.Dot(new ReadOnlySpan<float>(p, count), new ReadOnlySpan<float>(ds, count)); // Σ_u P_tu dP_tu
                        for (int i = 0; i < count; i++) ds[i] = p[i] * (ds[i] - weighted) * _scale;
                        float* qt = pq + (long)row * qDim + h * d;
                        float* dqt = pdq + (long)row * qDim + h * d;
                        for (int i = 0; i < count; i++)
                        {
                            long offset = kvFirst + (long)i * kvDim;
                            AddScaled(dqt, pk + offset, ds[i], d);
                            AddScaled(pdk + offset, qt, ds[i], d);
                            AddScaled(pdv + offset, dOt, p[i], d);
                        }
                    }
        });
    }

    /// <summary>a·b over <paramref name="d"/> floats, eight at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Dot(float* a, float* b, int d)
    {
        var sum = Vector256<float>.Zero;
        int i = 0;
        for (; i + 8 <= d; i += 8) sum = Vector256.FusedMultiplyAdd(Vector256.Load(a + i), Vector256.Load(b + i), sum);
        float result = Vector256.Sum(sum);
        for (; i < d; i++) result += a[i] * b[i];
        return result;
    }

    /// <summary>y += α·x over <paramref name="d"/> floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddScaled(float* y, float* x, float alpha, int d)
    {
        var a = Vector256.Create(alpha);
        int i = 0;
        for (; i + 8 <= d; i += 8) Vector256.FusedMultiplyAdd(Vector256.Load(x + i), a, Vector256.Load(y + i)).Store(y + i);
        for (; i < d; i++) y[i] += alpha * x[i];
    }
}
