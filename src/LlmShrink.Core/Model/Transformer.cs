using System.Numerics.Tensors;
using LlmShrink.Formats;
using LlmShrink.Kernels;

namespace LlmShrink.Model;

/// <summary>
/// The float32 forward pass of a Llama-family decoder (llama, mistral, qwen2, qwen3). Per block:
/// h = x + o_proj(attention(rope(q(norm(x))), rope(k(norm(x))), v(norm(x)))); out = h + down(SiLU(gate(norm(h))) · up(norm(h))).
/// A prompt of n tokens runs as matrix×matrix products, decode as matrix×vector — the same code with n = 1.
/// Each block has its own head counts and FFN width (<see cref="ModelConfig.Layer"/>; equal in an unpruned model).
/// Scratch buffers are sized for the widest block and grow to the largest batch seen, then are reused, so
/// steady-state calls allocate nothing.
/// Not thread-safe: one forward pass at a time per instance.
/// </summary>
public sealed class Transformer : IDisposable
{
    private readonly StoredTensor _embedding;
    private readonly TransformerBlock[] _blocks;
    private readonly float[] _finalNorm;
    private readonly Rope _rope;
    private readonly Attention _attention;
    private readonly WorkerPool _pool = WorkerPool.Shared;
    private readonly int _threads;

    // Scratch, [batch, width] row-major; sized for _batch tokens of the widest block.
    private int _batch;
    private bool _disposed;
    private float[] _x = [], _xNorm = [], _q = [], _k = [], _v = [], _attnOut = [], _gate = [], _up = [], _cos = [], _sin = [];
    private float[] _scores = [];

    public ModelConfig Config { get; private set; }

    /// <summary>Block <paramref name="layer"/> now has <paramref name="shape"/>'s widths (structured pruning replaced its layers by smaller ones).</summary>
    internal void Reshape(int layer, LayerShape shape) =>
        Config = Config.WithLayerShapes([.. Enumerable.Range(0, Config.NumLayers).Select(l => l == layer ? shape : Config.Layer(l))]);
    public IBlockObserver? Observer { get; set; }

    /// <summary>The decoder blocks; compression replaces their linear layers and rescales their norms in place.</summary>
    public IReadOnlyList<TransformerBlock> Blocks => _blocks;
    /// <summary>The output projection (the embedding matrix when tied); compression may replace it.</summary>
    public Linear LmHead { get; set; }
    /// <summary>The final RMSNorm weight (model.norm), a float32 copy that compression may rescale in place (AWQ, SmoothQuant on lm_head).</summary>
    public float[] FinalNorm => _finalNorm;

    /// <param name="model">Must stay open while the transformer is used: F32 weights are read from its mapping.</param>
    /// <param name="threads">Threads for each kernel, from the shared <see cref="WorkerPool"/>; 0 = all cores.</param>
    public Transformer(LoadedModel model, int threads = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(threads);
        var c = Config = model.Config;
        c.Validate(model.Source);
        var w = model.Weights;
        _threads = threads;
        _embedding = w.Get(TensorNames.Embedding);
        TensorShapes.Expect(_embedding, c.VocabSize, c.HiddenSize);
        _finalNorm = Vector(w, TensorNames.FinalNorm, c.HiddenSize);
        // An untied lm_head may be stored in any layout a block linear can (dense, GPTQ-packed, W8A8) and runs on its packed kernel.
        LmHead = c.TiedEmbeddings ? Linear.FromStored(_embedding, null, c.VocabSize, c.HiddenSize)
            : LinearLoader.Load(w, TensorNames.LmHeadModule, c.VocabSize, c.HiddenSize, null);

        _blocks = new TransformerBlock[c.NumLayers];
        for (int l = 0; l < c.NumLayers; l++)
        {
            int q = c.QDimOf(l), kv = c.KvDimOf(l), ffn = c.Layer(l).IntermediateSize;
            StoredTensor? Bias(string suffix) => c.AttentionBias ? w.Get(TensorNames.Layer(l, suffix)) : null;
            Linear L(string suffix, StoredTensor? bias, int outFeatures, int inFeatures) =>
                LinearLoader.Load(w, TensorNames.Layer(l, suffix)[..^".weight".Length], outFeatures, inFeatures, bias);
            _blocks[l] = new TransformerBlock
            {
                AttnNorm = Vector(w, TensorNames.Layer(l, TensorNames.AttnNorm), c.HiddenSize),
                FfnNorm = Vector(w, TensorNames.Layer(l, TensorNames.FfnNorm), c.HiddenSize),
                QNorm = c.QkNorm ? Vector(w, TensorNames.Layer(l, TensorNames.QNorm), c.HeadDim) : null,
                KNorm = c.QkNorm ? Vector(w, TensorNames.Layer(l, TensorNames.KNorm), c.HeadDim) : null,
                Q = L(TensorNames.Q, Bias(TensorNames.QBias), q, c.HiddenSize),
                K = L(TensorNames.K, Bias(TensorNames.KBias), kv, c.HiddenSize),
                V = L(TensorNames.V, Bias(TensorNames.VBias), kv, c.HiddenSize),
                O = L(TensorNames.O, null, c.HiddenSize, q),
                Gate = L(TensorNames.Gate, null, ffn, c.HiddenSize),
                Up = L(TensorNames.Up, null, ffn, c.HiddenSize),
                Down = L(TensorNames.Down, null, c.HiddenSize, ffn),
            };
        }

        var factors = w.Find(TensorNames.RopeFrequencyFactors);
        if (factors is not null) TensorShapes.Expect(factors, c.HeadDim / 2);
        _rope = Rope.ForModel(c, factors is null ? default : factors.ToFloatArray());
        _attention = new Attention(c);
    }

    private static float[] Vector(TensorSet weights, string name, int length)
    {
        var t = weights.Get(name);
        TensorShapes.Expect(t, length);
        return t.ToFloatArray();
    }

    public KvCache NewCache(int capacity) => new(capacity);

    /// <summary>
    /// Runs <paramref name="tokens"/> at positions cache.Length… and appends them to the cache. Writes logits for
    /// every token when <paramref name="logits"/> has tokens×vocab floats, or for the last token only when it has vocab floats.
    /// </summary>
    public void Forward(ReadOnlySpan<int> tokens, KvCache cache, Span<float> logits)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var c = Config;
        int n = tokens.Length, d = c.HiddenSize, vocab = c.VocabSize;
        if (n == 0) throw new ArgumentException("no tokens to run", nameof(tokens));
        if (cache.Length + n > cache.Capacity)
            throw new ArgumentException($"{n} tokens do not fit in the KV cache ({cache.Length} of {cache.Capacity} positions used)", nameof(cache));
        bool allLogits = logits.Length == (long)n * vocab;
        if (!allLogits && logits.Length != vocab)
            throw new ArgumentException($"logits must hold {n}×{vocab} or {vocab} floats, not {logits.Length}", nameof(logits));

        cache.EnsureStorage(c);
        EnsureScratch(n, cache.Capacity);
        int first = cache.Length;

        Embed(tokens, _x.AsSpan(0, n * d));
        ComputeAngles(first, n);

        for (int l = 0; l < _blocks.Length; l++)
        {
            Observer?.BlockInput(l, _x.AsSpan(0, n * d), n);
            RunBlock(l, cache, first, n);
            Observer?.BlockOutput(l, _x.AsSpan(0, n * d), n);
        }

        int rows = allLogits ? n : 1;
        var last = _x.AsSpan((n - rows) * d, rows * d);
        RmsNorm.ApplyRows(last, _finalNorm, _xNorm, rows, c.RmsNormEps);
        LmHead.Apply(_xNorm, logits, rows, _pool, _threads);
        cache.Length = first + n;
    }

    /// <summary>Writes token <c>token</c>'s embedding row into <c>destination</c> ([hiddenSize]).</summary>
    public delegate void EmbeddingRow(int token, Span<float> destination);

    /// <summary>
    /// While set, token rows come from here instead of the stored table: the planner measures the model with its
    /// embeddings in another type without writing one (<see cref="Planning.EmbeddingPlan"/>).
    /// </summary>
    public EmbeddingRow? EmbeddingRows { get; set; }

    /// <summary>Token embeddings of <paramref name="tokens"/> into <paramref name="hidden"/> ([n, hiddenSize]).</summary>
    public void Embed(ReadOnlySpan<int> tokens, Span<float> hidden)
    {
        int d = Config.HiddenSize;
        for (int i = 0; i < tokens.Length; i++)
        {
            if ((uint)tokens[i] >= (uint)Config.VocabSize) throw new ArgumentOutOfRangeException(nameof(tokens), $"token {tokens[i]} is outside the vocabulary of {Config.VocabSize}");
            if (EmbeddingRows is { } rows) rows(tokens[i], hidden.Slice(i * d, d));
            else _embedding.DequantizeRow(tokens[i], hidden.Slice(i * d, d));
        }
    }

    /// <summary>
    /// Runs block <paramref name="layer"/> alone on the hidden states of one sequence of n tokens (positions
    /// cache.Length…), in place, appending its keys and values to the cache. The sequential calibration pipeline
    /// drives the model block by block with this, so only one block's activations exist at a time.
    /// </summary>
    public void ForwardBlock(int layer, Span<float> hidden, int n, KvCache cache)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var c = Config;
        if (hidden.Length != n * c.HiddenSize) throw new ArgumentException($"hidden must hold {n}×{c.HiddenSize} floats", nameof(hidden));
        if (cache.Length + n > cache.Capacity) throw new ArgumentException($"{n} tokens do not fit in the KV cache", nameof(cache));
        cache.EnsureStorage(c);
        EnsureScratch(n, cache.Capacity);
        int first = cache.Length;
        ComputeAngles(first, n);
        hidden.CopyTo(_x);
        RunBlock(layer, cache, first, n);
        _x.AsSpan(0, hidden.Length).CopyTo(hidden);
        cache.Length = first + n;
    }

    private void ComputeAngles(int first, int n)
    {
        int half = Config.HeadDim / 2;
        for (int i = 0; i < n; i++) _rope.Angles(first + i, _cos.AsSpan(i * half, half), _sin.AsSpan(i * half, half));
    }

    private void RunBlock(int layer, KvCache cache, int first, int n)
    {
        var c = Config;
        var b = _blocks[layer];
        var shape = c.Layer(layer);
        int d = c.HiddenSize, hd = c.HeadDim, half = hd / 2, qDim = shape.Heads * hd, kvDim = shape.KvHeads * hd;
        var x = _x.AsSpan(0, n * d);
        var xNorm = _xNorm.AsSpan(0, n * d);

        // Attention.
        RmsNorm.ApplyRows(x, b.AttnNorm, xNorm, n, c.RmsNormEps);
        var q = _q.AsSpan(0, n * qDim);
        var k = _k.AsSpan(0, n * kvDim);
        var v = _v.AsSpan(0, n * kvDim);
        b.Q.Apply(xNorm, q, n, _pool, _threads);
        b.K.Apply(xNorm, k, n, _pool, _threads);
        b.V.Apply(xNorm, v, n, _pool, _threads);
        if (b.QNorm is not null && b.KNorm is not null)
        {
            RmsNorm.ApplyRows(q, b.QNorm, q, n * shape.Heads, c.RmsNormEps);
            RmsNorm.ApplyRows(k, b.KNorm, k, n * shape.KvHeads, c.RmsNormEps);
        }
        for (int i = 0; i < n; i++)
        {
            var cos = _cos.AsSpan(i * half, half);
            var sin = _sin.AsSpan(i * half, half);
            _rope.Rotate(q.Slice(i * qDim, qDim), cos, sin);
            _rope.Rotate(k.Slice(i * kvDim, kvDim), cos, sin);
        }
        cache.Store(layer, k, v, first, n);
        var (keys, values) = cache.Layer(layer);
        _attention.Run(shape.Heads, shape.KvHeads, _q, _attnOut, keys, values, first, n, cache.Capacity, _scores, _scores.Length / _pool.Threads, _pool, _threads);
        b.O.Apply(_attnOut.AsSpan(0, n * qDim), xNorm, n, _pool, _threads);
        TensorPrimitives.Add(x, xNorm, x);

        // Gated MLP.
        RmsNorm.ApplyRows(x, b.FfnNorm, xNorm, n, c.RmsNormEps);
        var gate = _gate.AsSpan(0, n * shape.IntermediateSize);
        var up = _up.AsSpan(0, n * shape.IntermediateSize);
        b.Gate.Apply(xNorm, gate, n, _pool, _threads);
        b.Up.Apply(xNorm, up, n, _pool, _threads);
        SwiGlu.Apply(gate, up);
        b.Down.Apply(gate, xNorm, n, _pool, _threads);
        TensorPrimitives.Add(x, xNorm, x);
    }

    private void EnsureScratch(int n, int cacheCapacity)
    {
        var c = Config;
        if (n > _batch)
        {
            _batch = n;
            _x = new float[n * c.HiddenSize];
            _xNorm = new float[n * c.HiddenSize];
            _q = new float[n * c.QDim];
            _k = new float[n * c.KvDim];
            _v = new float[n * c.KvDim];
            _attnOut = new float[n * c.QDim];
            _gate = new float[n * c.IntermediateSize];
            _up = new float[n * c.IntermediateSize];
            _cos = new float[n * c.HeadDim / 2];
            _sin = new float[n * c.HeadDim / 2];
        }
        if (_scores.Length < _pool.Threads * cacheCapacity) _scores = new float[_pool.Threads * cacheCapacity];
    }

    /// <summary>Ends use of the instance. F32 weights belong to the model's mapping, which the caller disposes.</summary>
    public void Dispose() => _disposed = true;
}
