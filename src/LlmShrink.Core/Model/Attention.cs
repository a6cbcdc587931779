using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using LlmShrink.Kernels;

namespace LlmShrink.Model;

/// <summary>
/// Causal grouped-query attention (Ainslie et al. 2023) of a batch of new positions over the KV cache:
/// for query head h, token i at position p: out = Σ_t softmax_t(q·k_t / √d) v_t over t ≤ p (and t &gt; p − window
/// with Mistral's sliding window), where k and v come from key/value head h / (heads / kvHeads).
/// The cache is head-major (<see cref="KvCache"/>), so one head's keys and values are two contiguous streams.
/// Work items are (token, head) pairs spread over the worker pool. Head counts come with each call: the blocks of a
/// pruned model may differ in them (the head size does not).
/// </summary>
internal sealed class Attention : IParallelWork
{
    private readonly int _headDim;
    private readonly int? _window;
    private readonly float _scale;

    private float[] _q = [], _output = [], _keys = [], _values = [], _scores = [];
    private int _heads, _kvHeads, _firstPosition, _capacity, _scoreStride;

    public Attention(ModelConfig config)
    {
        _headDim = config.HeadDim;
        _window = config.SlidingWindow;
        _scale = 1f / MathF.Sqrt(config.HeadDim);
    }

    /// <summary>Whether the written-out loops run: head sizes that are whole 512-bit vectors.</summary>
    private bool Vectorized => Vector512.IsHardwareAccelerated && _headDim % 16 == 0;

    /// <param name="heads">This layer's query heads; <paramref name="kvHeads"/> its key/value heads.</param>
    /// <param name="q">[n, heads·headDim] queries after RoPE.</param>
    /// <param name="output">[n, heads·headDim] attention outputs.</param>
    /// <param name="keys">This layer's cached keys, [kvHeads, capacity, headDim], already holding positions up to firstPosition + n.</param>
    /// <param name="scores">Scratch of <paramref name="scoreStride"/> floats per worker thread.</param>
    public void Run(int heads, int kvHeads, float[] q, float[] output, float[] keys, float[] values, int firstPosition, int n, int capacity,
        float[] scores, int scoreStride, WorkerPool pool, int threads)
    {
        (_heads, _kvHeads) = (heads, kvHeads);
        (_q, _output, _keys, _values, _scores) = (q, output, keys, values, scores);
        (_firstPosition, _capacity, _scoreStride) = (firstPosition, capacity, scoreStride);
        pool.For(n * _heads, this, threads);
        _q = _output = _keys = _values = _scores = [];
    }

    public unsafe void Execute(int begin, int end, int worker)
    {
        int d = _headDim, qDim = _heads * d, group = _heads / _kvHeads;
        for (int item = begin; item < end; item++)
        {
            int i = item / _heads, h = item % _heads;
            int position = _firstPosition + i;
            int first = _window is int w ? Math.Max(0, position - w + 1) : 0;
            long cached = ((long)(h / group) * _capacity + first) * d; // key/value head h / group, position first
            var q = _q.AsSpan(i * qDim + h * d, d);
            var scores = _scores.AsSpan(worker * _scoreStride, position - first + 1);
            var output = _output.AsSpan(i * qDim + h * d, d);
            if (Vectorized)
            {
                fixed (float* qp = q, s = scores, o = output, keys = _keys, values = _values)
                {
                    Scores(qp, keys + cached, s, scores.Length);
                    Softmax.Apply(scores);
                    WeightedValues(s, scores.Length, values + cached, o);
                }
                continue;
            }
            fixed (float* qp = q, s = scores, o = output, keys = _keys, values = _values)
            {
                NarrowScores(qp, keys + cached, s, scores.Length);
                Softmax.Apply(scores);
                NarrowWeightedValues(s, scores.Length, values + cached, o);
            }
        }
    }

    // Head sizes that are not whole 512-bit vectors (stories260K's 8) take loops over 256-bit vectors, or plain ones: a
    // library call per position on spans of 8 floats cost several times its arithmetic (the whole-file stories260K
    // perplexity spent a third of its time creating spans and calling TensorPrimitives).

    /// <summary>s[t] = q·k_t / √d, one position at a time.</summary>
    private unsafe void NarrowScores(float* q, float* k, float* s, int count)
    {
        int d = _headDim, whole = d - d % 8;
        for (int t = 0; t < count; t++, k += d)
        {
            var a = Vector256<float>.Zero;
            for (int c = 0; c < whole; c += 8) a = Vector256.FusedMultiplyAdd(Vector256.Load(q + c), Vector256.Load(k + c), a);
            float dot = Vector256.Sum(a);
            for (int c = whole; c < d; c++) dot += q[c] * k[c];
            s[t] = dot * _scale;
        }
    }

    /// <summary>o = Σ_t s[t]·v_t, each 8-float slice of o accumulated over all positions in a register.</summary>
    private unsafe void NarrowWeightedValues(float* s, int count, float* v, float* o)
    {
        int d = _headDim, whole = d - d % 8;
        for (int c = 0; c < whole; c += 8)
        {
            var a = Vector256<float>.Zero;
            float* row = v + c;
            for (int t = 0; t < count; t++, row += d) a = Vector256.FusedMultiplyAdd(Vector256.Load(row), Vector256.Create(s[t]), a);
            a.Store(o + c);
        }
        for (int c = whole; c < d; c++)
        {
            float sum = 0;
            for (int t = 0; t < count; t++) sum += s[t] * v[(long)t * d + c];
            o[c] = sum;
        }
    }

    // The loops below are written out for whole vectors: in decode every head attends to hundreds of cached positions,
    // and a library call per 64-float dot product cost more than the arithmetic (~0.6 M calls per token for a
    // 16-layer, 32-head model at 576 positions).

    /// <summary>s[t] = q·k_t / √d for <paramref name="count"/> consecutive cached keys; four positions at a time keep four independent FMA chains.</summary>
    private unsafe void Scores(float* q, float* k, float* s, int count)
    {
        int d = _headDim, t = 0;
        for (; t + 4 <= count; t += 4, k += 4 * d)
        {
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (int c = 0; c < d; c += 16)
            {
                var qc = Vector512.Load(q + c);
                a0 = Vector512.FusedMultiplyAdd(qc, Vector512.Load(k + c), a0);
                a1 = Vector512.FusedMultiplyAdd(qc, Vector512.Load(k + d + c), a1);
                a2 = Vector512.FusedMultiplyAdd(qc, Vector512.Load(k + 2 * d + c), a2);
                a3 = Vector512.FusedMultiplyAdd(qc, Vector512.Load(k + 3 * d + c), a3);
            }
            s[t] = Sum(a0) * _scale;
            s[t + 1] = Sum(a1) * _scale;
            s[t + 2] = Sum(a2) * _scale;
            s[t + 3] = Sum(a3) * _scale;
        }
        for (; t < count; t++, k += d)
        {
            var a = Vector512<float>.Zero;
            for (int c = 0; c < d; c += 16) a = Vector512.FusedMultiplyAdd(Vector512.Load(q + c), Vector512.Load(k + c), a);
            s[t] = Sum(a) * _scale;
        }
    }

    /// <summary>
    /// o = Σ_t s[t]·v_t. Each 64-float quarter of o is accumulated over all positions in registers, even and odd
    /// positions in separate accumulators: eight independent FMA chains, where one chain per 16 floats waited on the
    /// FMA latency at every position.
    /// </summary>
    private unsafe void WeightedValues(float* s, int count, float* v, float* o)
    {
        int d = _headDim, c = 0;
        for (; c + 64 <= d; c += 64)
        {
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            Vector512<float> b0 = default, b1 = default, b2 = default, b3 = default;
            float* row = v + c;
            int t = 0;
            for (; t + 2 <= count; t += 2, row += 2 * d)
            {
                var even = Vector512.Create(s[t]);
                a0 = Vector512.FusedMultiplyAdd(Vector512.Load(row), even, a0);
                a1 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 16), even, a1);
                a2 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 32), even, a2);
                a3 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 48), even, a3);
                var odd = Vector512.Create(s[t + 1]);
                b0 = Vector512.FusedMultiplyAdd(Vector512.Load(row + d), odd, b0);
                b1 = Vector512.FusedMultiplyAdd(Vector512.Load(row + d + 16), odd, b1);
                b2 = Vector512.FusedMultiplyAdd(Vector512.Load(row + d + 32), odd, b2);
                b3 = Vector512.FusedMultiplyAdd(Vector512.Load(row + d + 48), odd, b3);
            }
            if (t < count)
            {
                var last = Vector512.Create(s[t]);
                a0 = Vector512.FusedMultiplyAdd(Vector512.Load(row), last, a0);
                a1 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 16), last, a1);
                a2 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 32), last, a2);
                a3 = Vector512.FusedMultiplyAdd(Vector512.Load(row + 48), last, a3);
            }
            (a0 + b0).Store(o + c);
            (a1 + b1).Store(o + c + 16);
            (a2 + b2).Store(o + c + 32);
            (a3 + b3).Store(o + c + 48);
        }
        for (; c < d; c += 16) // head sizes that are not a multiple of 64 (e.g. 80, 96): the rest one vector at a time
        {
            Vector512<float> a = default, b = default;
            float* row = v + c;
            int t = 0;
            for (; t + 2 <= count; t += 2, row += 2 * d)
            {
                a = Vector512.FusedMultiplyAdd(Vector512.Load(row), Vector512.Create(s[t]), a);
                b = Vector512.FusedMultiplyAdd(Vector512.Load(row + d), Vector512.Create(s[t + 1]), b);
            }
            if (t < count) a = Vector512.FusedMultiplyAdd(Vector512.Load(row), Vector512.Create(s[t]), a);
            (a + b).Store(o + c);
        }
    }

    /// <summary>The sum of the 16 lanes, halving the width each step.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Sum(Vector512<float> v)
    {
        var half = v.GetLower() + v.GetUpper();
        var quarter = half.GetLower() + half.GetUpper();
        quarter += Sse.MoveHighToLow(quarter, quarter);
        quarter += Sse.Shuffle(quarter, quarter, 0b01);
        return quarter.ToScalar();
    }
}
