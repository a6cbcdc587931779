using System.Numerics.Tensors;
using LlmShrink.Kernels;

namespace LlmShrink.Model;

/// <summary>
/// Causal grouped-query attention (Ainslie et al. 2023) of a batch of new positions over the KV cache:
/// for query head h, token i at position p: out = Σ_t softmax_t(q·k_t / √d) v_t over t ≤ p (and t &gt; p − window
/// with Mistral's sliding window), where k and v come from key/value head h / (heads / kvHeads).
/// Work items are (token, head) pairs spread over the worker pool.
/// </summary>
internal sealed class Attention : IParallelWork
{
    private readonly int _heads, _kvHeads, _headDim;
    private readonly int? _window;
    private readonly float _scale;

    private float[] _q = [], _output = [], _keys = [], _values = [], _scores = [];
    private int _firstPosition, _scoreStride;

    public Attention(ModelConfig config)
    {
        _heads = config.NumHeads;
        _kvHeads = config.NumKvHeads;
        _headDim = config.HeadDim;
        _window = config.SlidingWindow;
        _scale = 1f / MathF.Sqrt(config.HeadDim);
    }

    /// <param name="q">[n, heads·headDim] queries after RoPE.</param>
    /// <param name="output">[n, heads·headDim] attention outputs.</param>
    /// <param name="keys">This layer's cached keys, already holding positions up to firstPosition + n.</param>
    /// <param name="scores">Scratch of <paramref name="scoreStride"/> floats per worker thread.</param>
    public void Run(float[] q, float[] output, float[] keys, float[] values, int firstPosition, int n,
        float[] scores, int scoreStride, WorkerPool pool, int threads)
    {
        (_q, _output, _keys, _values, _scores) = (q, output, keys, values, scores);
        (_firstPosition, _scoreStride) = (firstPosition, scoreStride);
        pool.For(n * _heads, this, threads);
        _q = _output = _keys = _values = _scores = [];
    }

    public void Execute(int begin, int end, int worker)
    {
        int d = _headDim, qDim = _heads * d, kvDim = _kvHeads * d, group = _heads / _kvHeads;
        for (int item = begin; item < end; item++)
        {
            int i = item / _heads, h = item % _heads;
            int position = _firstPosition + i;
            int first = _window is int w ? Math.Max(0, position - w + 1) : 0;
            int kvOffset = h / group * d;
            var q = _q.AsSpan(i * qDim + h * d, d);
            var scores = _scores.AsSpan(worker * _scoreStride, position - first + 1);
            for (int t = first; t <= position; t++)
                scores[t - first] = TensorPrimitives.Dot(q, _keys.AsSpan(t * kvDim + kvOffset, d)) * _scale;
            Softmax.Apply(scores);
            var output = _output.AsSpan(i * qDim + h * d, d);
            output.Clear();
            for (int t = first; t <= position; t++)
                TensorPrimitives.MultiplyAdd(_values.AsSpan(t * kvDim + kvOffset, d), scores[t - first], output, output);
        }
    }
}
