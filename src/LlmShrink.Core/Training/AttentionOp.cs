using System.Numerics.Tensors;
using LlmShrink.Kernels;

namespace LlmShrink.Training;

/// <summary>
/// Causal grouped-query attention (Vaswani et al. 2017; Ainslie et al. 2023) over a batch of sequences, each starting at
/// position 0. For query head h of token t, key/value head g = h / (heads / kvHeads):
/// S_ts = q_t·k_s / √d, P_t = softmax_s(S_t) over s ≤ t (and s &gt; t − window with a sliding window), o_t = Σ_s P_ts v_s.
/// The forward keeps P ([batch, heads, T, T]). Backward (per head, with dO given):
/// dP_ts = dO_t·v_s; dS_ts = P_ts (dP_ts − Σ_u P_tu dP_tu) (the softmax Jacobian); dq_t = Σ_s dS_ts k_s / √d;
/// dk_s = Σ_t dS_ts q_t / √d; dv_s = Σ_t P_ts dO_t — dk and dv summed over the query heads that share g.
/// Layouts are the inference ones: q and o [batch·T, heads·d], k and v [batch·T, kvHeads·d], row-major.
/// <para>Every step is a small matrix product on <see cref="AttentionTiles"/> (S = Q·Kᵀ, O = P·V, dP = dO·Vᵀ,
/// dQ = dS·K, dK = dSᵀ·Q, dV = Pᵀ·dO), over blocks of 4 query (or key) rows. Per (sequence, head) the operands B of the
/// products are first packed into scratch: Kᵀ and Vᵀ [d, T₁₆] so that scores for 16 keys are d broadcast-FMAs with no
/// horizontal sum, and K, V, Q, dO [T, d₁₆] with contiguous rows (T₁₆, d₁₆: rounded up to 16). Packing costs O(T·d)
/// against the products' O(T²·d). Written as a 32-float dot product with a horizontal sum per score and a load/store of
/// the output row per key, attention took a fifth of a training step on tinylit-8m while doing 3.5 % of its arithmetic;
/// tiled, one layer of 16×256 tokens (8 heads, 4 kv heads, d 32) takes 21–23 ms forward and 25–27 ms backward against
/// 84–92 and 110–169 ms (2 threads on the shared Zen 4, best of 13), about 4 % of a step.</para>
/// <para>Row t of a block of 4 rows [t₀, t₀ + 4) is computed over the keys [lo, hi) of the block: lo = first(t₀) rounded
/// down to 16, hi = t₀ + 4 rounded up to 16, which hold every row's window [first(t), t]. The forward stores P over
/// [lo, min(hi, T)) with zeros outside the window, so the products can run over the block's whole range; those zeros
/// also make dS zero there, which is what lets dK and dV run over dS's and P's columns for a block of 4 keys
/// [s₀, s₀ + 4): each query t ≥ s₀ that sees one of them has lo(t) ≤ s₀ and hi(t) ≥ s₀ + 4.</para>
/// </summary>
public sealed unsafe class AttentionOp(int heads, int kvHeads, int headDim, int? window)
{
    private const int Rows = 4;
    private readonly int _heads = heads, _kvHeads = kvHeads, _headDim = headDim;
    private readonly int? _window = window;
    private readonly float _scale = 1f / MathF.Sqrt(headDim);

    public int ProbabilityCount(int batch, int seqLen) => batch * _heads * seqLen * seqLen;

    private int First(int t) => _window is int w ? Math.Max(0, t - w + 1) : 0;

    /// <summary>The keys [lo, hi) a block of query rows starting at <paramref name="t0"/> is computed over (see the summary).</summary>
    private (int Lo, int Hi) Keys(int t0) => (First(t0) & ~15, Round16(t0 + Rows));

    private static int Round16(int n) => (n + 15) & ~15;

    [ThreadStatic] private static float[]? t_scratch;

    /// <summary>This thread's scratch of at least <paramref name="floats"/> floats (grown, never shrunk, so a training run allocates it once).</summary>
    private static float[] Scratch(long floats)
    {
        if (t_scratch is null || t_scratch.Length < floats) t_scratch = new float[floats];
        return t_scratch;
    }

    public void Forward(float[] q, float[] k, float[] v, float[] output, float[] probabilities, int batch, int seqLen)
    {
        fixed (float* pq = q, pk = k, pv = v, po = output, pp = probabilities)
            WorkerPool.Shared.For(batch * _heads, new ForwardWork(this, pq, pk, pv, po, pp, seqLen));
    }

    /// <summary>Adds the gradients with respect to q, k and v (after RoPE) into <paramref name="dq"/>, <paramref name="dk"/>, <paramref name="dv"/>.</summary>
    public void Backward(float[] dOutput, float[] q, float[] k, float[] v, float[] probabilities, float[] dq, float[] dk, float[] dv, int batch, int seqLen)
    {
        fixed (float* pdO = dOutput, pq = q, pk = k, pv = v, pp = probabilities, pdq = dq, pdk = dk, pdv = dv)
            // One work item per (sequence, key/value head): the query heads of a group all add into the same dk, dv rows.
            WorkerPool.Shared.For(batch * _kvHeads, new BackwardWork(this, pdO, pq, pk, pv, pp, pdq, pdk, pdv, seqLen));
    }

    /// <summary>dst[i, s] = src[s·stride + i] for s &lt; T, i &lt; d: a head's keys or values as [d, T₁₆], zero past T.</summary>
    private static void PackTransposed(float* src, int stride, int d, int seqLen, float* dst)
    {
        int width = Round16(seqLen);
        for (int i = 0; i < d; i++)
        {
            float* row = dst + (long)i * width;
            for (int s = 0; s < seqLen; s++) row[s] = src[(long)s * stride + i];
            new Span<float>(row + seqLen, width - seqLen).Clear();
        }
    }

    /// <summary>dst[s, i] = src[s·stride + i] for s &lt; T, i &lt; d: a head's rows as [T, d₁₆], zero past d.</summary>
    private static void Pack(float* src, int stride, int d, int seqLen, float* dst)
    {
        int width = Round16(d);
        for (int s = 0; s < seqLen; s++)
        {
            new ReadOnlySpan<float>(src + (long)s * stride, d).CopyTo(new Span<float>(dst + (long)s * width, d));
            new Span<float>(dst + (long)s * width + d, width - d).Clear();
        }
    }

    /// <summary>One (sequence, query head) per item: P and o for all its rows.</summary>
    private sealed class ForwardWork(AttentionOp op, float* q, float* k, float* v, float* output, float* probabilities, int seqLen) : IParallelWork
    {
        // Primary-constructor parameters of pointer type cannot be captured; copies in fields can.
        private readonly float* _q = q, _k = k, _v = v, _output = output, _probabilities = probabilities;

        public void Execute(int begin, int end, int worker)
        {
            int T = seqLen, d = op._headDim, dp = Round16(d), tp = Round16(T), qDim = op._heads * d, kvDim = op._kvHeads * d, group = op._heads / op._kvHeads;
            // Kᵀ [d, T₁₆], V [T, d₁₆], the block's scores [4, T₁₆] and outputs [4, d₁₆].
            long kt = 0, vs = kt + (long)d * tp, scores = vs + (long)T * dp, outputs = scores + Rows * tp, size = outputs + Rows * dp;
            fixed (float* scratch = Scratch(size))
                for (int item = begin; item < end; item++)
                {
                    int b = item / op._heads, h = item % op._heads, g = h / group;
                    PackTransposed(_k + (long)b * T * kvDim + g * d, kvDim, d, T, scratch + kt);
                    Pack(_v + (long)b * T * kvDim + g * d, kvDim, d, T, scratch + vs);
                    float* qh = _q + (long)b * T * qDim + h * d, oh = _output + (long)b * T * qDim + h * d;
                    float* ph = _probabilities + (long)item * T * T;
                    for (int t0 = 0; t0 < T; t0 += Rows)
                    {
                        int rows = Math.Min(Rows, T - t0);
                        var (lo, hi) = op.Keys(t0);
                        AttentionTiles.Multiply(qh + (long)t0 * qDim, qDim, 1, rows, scratch + kt + lo, tp, d, scratch + scores + lo, tp, hi - lo, add: false);
                        for (int r = 0; r < rows; r++)
                        {
                            int t = t0 + r, first = op.First(t), stored = Math.Min(hi, T);
                            float* p = ph + (long)t * T;
                            new Span<float>(p + lo, first - lo).Clear();
                            var window = new Span<float>(p + first, t - first + 1);
                            TensorPrimitives.Multiply(new ReadOnlySpan<float>(scratch + scores + r * tp + first, window.Length), op._scale, window);
                            Softmax.Apply(window);
                            new Span<float>(p + t + 1, stored - t - 1).Clear();
                        }
                        // o_t = Σ_s P_ts v_s over the block's keys up to its last row (P is zero past each row's own t).
                        AttentionTiles.Multiply(ph + (long)t0 * T + lo, T, 1, rows, scratch + vs + (long)lo * dp, dp, t0 + rows - lo, scratch + outputs, dp, dp, add: false);
                        for (int r = 0; r < rows; r++)
                            new ReadOnlySpan<float>(scratch + outputs + r * dp, d).CopyTo(new Span<float>(oh + (long)(t0 + r) * qDim, d));
                    }
                }
        }
    }

    /// <summary>One (sequence, key/value head) per item: dq of every query head of the group, and dk, dv summed over them.</summary>
    private sealed class BackwardWork(AttentionOp op, float* dOutput, float* q, float* k, float* v, float* probabilities, float* dq, float* dk, float* dv, int seqLen) : IParallelWork
    {
        private readonly float* _dOutput = dOutput, _q = q, _k = k, _v = v, _probabilities = probabilities, _dq = dq, _dk = dk, _dv = dv;

        public void Execute(int begin, int end, int worker)
        {
            int T = seqLen, T4 = (T + Rows - 1) & ~(Rows - 1), d = op._headDim, dp = Round16(d), tp = Round16(T);
            int qDim = op._heads * d, kvDim = op._kvHeads * d, group = op._heads / op._kvHeads;
            // K [T, d₁₆], Vᵀ [d, T₁₆], one head's Q and dO [T, d₁₆], its dS [T₄, T₁₆], the group's dK and dV [T₄, d₁₆]
            // (4-row blocks past T write padding rows), a block's dq [4, d₁₆].
            long ks = 0, vt = ks + (long)T * dp, qs = vt + (long)d * tp, dOs = qs + (long)T * dp, dS = dOs + (long)T * dp;
            long dKs = dS + (long)T4 * tp, dVs = dKs + (long)T4 * dp, dQs = dVs + (long)T4 * dp, size = dQs + Rows * dp;
            fixed (float* scratch = Scratch(size))
                for (int item = begin; item < end; item++)
                {
                    int b = item / op._kvHeads, g = item % op._kvHeads;
                    long kvBase = (long)b * T * kvDim + g * d;
                    Pack(_k + kvBase, kvDim, d, T, scratch + ks);
                    PackTransposed(_v + kvBase, kvDim, d, T, scratch + vt);
                    new Span<float>(scratch + dKs, 2 * T4 * dp).Clear(); // dK and dV, adjacent
                    for (int h = g * group; h < (g + 1) * group; h++)
                    {
                        long qBase = (long)b * T * qDim + h * d;
                        Pack(_q + qBase, qDim, d, T, scratch + qs);
                        Pack(_dOutput + qBase, qDim, d, T, scratch + dOs);
                        float* ph = _probabilities + ((long)b * op._heads + h) * T * T;
                        for (int t0 = 0; t0 < T; t0 += Rows)
                        {
                            int rows = Math.Min(Rows, T - t0);
                            var (lo, hi) = op.Keys(t0);
                            float* dSBlock = scratch + dS + (long)t0 * tp;
                            // dP = dO·Vᵀ, then dS = P ⊙ (dP − Σ_u P_tu dP_tu) / √d in place, over [lo, min(hi, T)).
                            AttentionTiles.Multiply(scratch + dOs + (long)t0 * dp, dp, 1, rows, scratch + vt + lo, tp, d, dSBlock + lo, tp, hi - lo, add: false);
                            for (int r = 0; r < rows; r++)
                            {
                                var p = new ReadOnlySpan<float>(ph + (long)(t0 + r) * T + lo, Math.Min(hi, T) - lo);
                                var row = new Span<float>(dSBlock + r * tp + lo, p.Length);
                                float weighted = TensorPrimitives.Dot(p, row);
                                TensorPrimitives.Subtract(row, weighted, row);
                                TensorPrimitives.Multiply(row, p, row);
                                TensorPrimitives.Multiply(row, op._scale, row);
                            }
                            // dq_t = Σ_s dS_ts k_s.
                            AttentionTiles.Multiply(dSBlock + lo, tp, 1, rows, scratch + ks + (long)lo * dp, dp, t0 + rows - lo, scratch + dQs, dp, dp, add: false);
                            for (int r = 0; r < rows; r++)
                            {
                                var dqt = new Span<float>(_dq + qBase + (long)(t0 + r) * qDim, d);
                                TensorPrimitives.Add(dqt, new ReadOnlySpan<float>(scratch + dQs + r * dp, d), dqt);
                            }
                        }
                        // dk_s = Σ_t dS_ts q_t and dv_s = Σ_t P_ts dO_t over the queries t ∈ [s₀, s₀ + 3 + window) that see a key of the block.
                        for (int s0 = 0; s0 < T; s0 += Rows)
                        {
                            int rows = Math.Min(Rows, T - s0), tEnd = op._window is int w ? Math.Min(T, s0 + Rows - 1 + w) : T;
                            AttentionTiles.Multiply(scratch + dS + (long)s0 * tp + s0, 1, tp, rows, scratch + qs + (long)s0 * dp, dp, tEnd - s0, scratch + dKs + (long)s0 * dp, dp, dp, add: true);
                            AttentionTiles.Multiply(ph + (long)s0 * T + s0, 1, T, rows, scratch + dOs + (long)s0 * dp, dp, tEnd - s0, scratch + dVs + (long)s0 * dp, dp, dp, add: true);
                        }
                    }
                    for (int s = 0; s < T; s++)
                    {
                        var dks = new Span<float>(_dk + kvBase + (long)s * kvDim, d);
                        var dvs = new Span<float>(_dv + kvBase + (long)s * kvDim, d);
                        TensorPrimitives.Add(dks, new ReadOnlySpan<float>(scratch + dKs + (long)s * dp, d), dks);
                        TensorPrimitives.Add(dvs, new ReadOnlySpan<float>(scratch + dVs + (long)s * dp, d), dvs);
                    }
                }
        }
    }
}
