using System.Numerics.Tensors;
using LlmShrink.Formats;
using LlmShrink.Kernels;
using LlmShrink.Model;

namespace LlmShrink.Training;

/// <summary>
/// A Llama-family decoder (llama, mistral, qwen2, qwen3; per-block widths of a structurally pruned model included) as
/// float32 parameters with gradients beside them, and an explicit forward and backward pass in the style of llm.c.
/// <see cref="Forward"/> runs a batch of sequences (each from position 0) as the inference <see cref="Transformer"/>
/// does, with the same kernels, and keeps in <see cref="BlockActivations"/> what <see cref="Backward"/> needs; a loss
/// (<see cref="CrossEntropy"/>, <see cref="DistillationLoss"/>) turns the logits into ∂L/∂logits, and
/// <see cref="Backward"/> adds ∂L/∂θ into every <see cref="Parameter.Grad"/>.
/// Not thread-safe: one forward/backward at a time.
/// </summary>
public sealed class TrainableModel
{
    public ModelConfig Config { get; }
    public Parameter Embedding { get; }
    public Parameter FinalNorm { get; }
    /// <summary>The output projection; the same object as <see cref="Embedding"/> when the model ties them.</summary>
    public Parameter LmHead { get; }
    public IReadOnlyList<TrainableBlock> Blocks { get; }
    /// <summary>Every parameter once (a tied lm_head is the embedding): the checkpoint's tensors.</summary>
    public IReadOnlyList<Parameter> Parameters { get; }

    /// <summary>
    /// What the optimizer updates: <see cref="Parameters"/>, less frozen ones (<see cref="Parameter.Frozen"/>) and
    /// fake-quantized weights whose codes are frozen (PEQA), plus every fake-quantized weight's scales and zero points
    /// (<see cref="Parameter.Quantization"/>) and every adapter's factors (<see cref="Parameter.Adapter"/>).
    /// </summary>
    public IReadOnlyList<Parameter> Trainable =>
        [.. Parameters.Where(p => !p.Frozen && p.Quantization is not { TrainsWeights: false }), .. Parameters.SelectMany(p => p.Quantization?.Parameters ?? []),
            .. Parameters.SelectMany(p => p.Adapter?.Parameters ?? [])];

    private readonly Rope _rope;
    private readonly AttentionOp[] _attention;

    // The last forward pass: its shape, tokens, each block's input, the activations it kept, and the gradient scratch its backward reuses.
    private int _batch, _seqLen;
    private bool _recomputing;
    private int[] _tokens = [];
    private float[][] _inputs = [];
    private BlockActivations[] _layers = [];
    private float[] _finalInput = [], _finalNorm = [], _finalRstd = [], _logits = [], _cos = [], _sin = [], _negativeSin = [];
    private float[] _dx = [], _dNorm = [], _dAct = [], _dGate = [], _dUp = [], _dAttention = [], _dQ = [], _dK = [], _dV = [], _dQRaw = [], _dKRaw = [], _residual = [];

    private TrainableModel(ModelConfig config, Parameter embedding, Parameter finalNorm, Parameter? lmHead, IReadOnlyList<TrainableBlock> blocks, ReadOnlySpan<float> ropeFactors)
    {
        Config = config;
        Embedding = embedding;
        FinalNorm = finalNorm;
        LmHead = config.TiedEmbeddings ? embedding : lmHead ?? throw new ArgumentException("an untied model needs an lm_head", nameof(lmHead));
        Blocks = blocks;
        Parameters = [Embedding, .. blocks.SelectMany(b => b.Parameters), FinalNorm, .. config.TiedEmbeddings ? Array.Empty<Parameter>() : [LmHead]];
        _rope = Rope.ForModel(config, ropeFactors);
        _attention = [.. Enumerable.Range(0, config.NumLayers).Select(l => new AttentionOp(config.Layer(l).Heads, config.Layer(l).KvHeads, config.HeadDim, config.SlidingWindow))];
    }

    /// <summary>
    /// Copies a checkpoint's weights into float32 parameters, through the loader's tensors (F32, F16 or BF16). A packed
    /// layer (GPTQ, GGML blocks) is refused unless <paramref name="packed"/>(tensor name) gives its values (a quantized
    /// student's latent weight, <see cref="FakeQuantization.InitialLatent"/>, which <see cref="DistillationStudent"/> then
    /// fake-quantizes); null there means a dense tensor. A low-rank module is refused unless <paramref name="factored"/>(tensor
    /// name) gives its <see cref="Parameter.Factored"/> parameter.
    /// </summary>
    public static TrainableModel FromLoaded(LoadedModel model, Func<string, float[]?>? packed = null, Func<string, Parameter?>? factored = null)
    {
        var c = model.Config;
        c.Validate(model.Source);
        var w = model.Weights;
        var factors = w.Find(TensorNames.RopeFrequencyFactors);
        if (factors is not null) TensorShapes.Expect(factors, c.HeadDim / 2);
        return Create(c, Parameter (name, shape) =>
        {
            if (factored?.Invoke(name) is { } parameter)
            {
                if (parameter.Rows != shape[0] || parameter.Columns != shape[^1]) throw ShrinkException.InFile(model.Source, $"low-rank module '{name}' does not have the shape [{string.Join(", ", shape)}] the configuration implies");
                return parameter;
            }
            if (packed?.Invoke(name) is { } values)
            {
                if (values.Length != shape.Aggregate(1L, (a, b) => a * b)) throw ShrinkException.InFile(model.Source, $"packed tensor '{name}' does not have the shape [{string.Join(", ", shape)}] the configuration implies");
                return new Parameter(name, values, shape);
            }
            var t = w.Find(name) ?? throw ShrinkException.InFile(model.Source, $"tensor '{name}' is missing (a packed layer has no dense weight to train)");
            if (t.Type is not (TensorType.F32 or TensorType.F16 or TensorType.BF16))
                throw ShrinkException.InFile(model.Source, $"tensor '{name}' is stored as {t.Type}; training reads dense F32, F16 or BF16 weights");
            TensorShapes.Expect(t, [.. shape.Select(s => (long)s)]);
            return new Parameter(name, t.ToFloatArray(), shape);
        }, factors is null ? default : factors.ToFloatArray());
    }

    /// <summary>The model of configuration <paramref name="c"/> whose tensor of each canonical name and shape holds <paramref name="values"/>(name, shape).</summary>
    public static TrainableModel Create(ModelConfig c, Func<string, int[], float[]> values, ReadOnlySpan<float> ropeFactors) =>
        Create(c, (name, shape) => new Parameter(name, values(name, shape), shape), ropeFactors);

    /// <summary>The model of configuration <paramref name="c"/> whose parameter of each canonical name and shape is <paramref name="parameter"/>(name, shape).</summary>
    private static TrainableModel Create(ModelConfig c, Func<string, int[], Parameter> parameter, ReadOnlySpan<float> ropeFactors)
    {
        Parameter P(string name, params int[] shape) => parameter(name, shape);
        int d = c.HiddenSize, hd = c.HeadDim;
        var blocks = new TrainableBlock[c.NumLayers];
        for (int l = 0; l < c.NumLayers; l++)
        {
            string L(string suffix) => TensorNames.Layer(l, suffix);
            int q = c.QDimOf(l), kv = c.KvDimOf(l), ffn = c.Layer(l).IntermediateSize;
            blocks[l] = new TrainableBlock
            {
                AttnNorm = P(L(TensorNames.AttnNorm), d),
                FfnNorm = P(L(TensorNames.FfnNorm), d),
                Q = P(L(TensorNames.Q), q, d),
                K = P(L(TensorNames.K), kv, d),
                V = P(L(TensorNames.V), kv, d),
                O = P(L(TensorNames.O), d, q),
                Gate = P(L(TensorNames.Gate), ffn, d),
                Up = P(L(TensorNames.Up), ffn, d),
                Down = P(L(TensorNames.Down), d, ffn),
                QBias = c.AttentionBias ? P(L(TensorNames.QBias), q) : null,
                KBias = c.AttentionBias ? P(L(TensorNames.KBias), kv) : null,
                VBias = c.AttentionBias ? P(L(TensorNames.VBias), kv) : null,
                QNorm = c.QkNorm ? P(L(TensorNames.QNorm), hd) : null,
                KNorm = c.QkNorm ? P(L(TensorNames.KNorm), hd) : null,
            };
        }
        return new TrainableModel(c, P(TensorNames.Embedding, c.VocabSize, d), P(TensorNames.FinalNorm, d),
            c.TiedEmbeddings ? null : P(TensorNames.LmHead, c.VocabSize, d), blocks, ropeFactors);
    }

    public void ZeroGrad()
    {
        foreach (var p in Trainable) p.ZeroGrad();
    }

    /// <summary>
    /// Per-block activation recomputation (gradient checkpointing, Chen et al. 2016): the forward keeps only each
    /// block's input, and the backward reruns a block's forward just before its backward, into one set of activations
    /// shared by all blocks. Memory for activations falls from L blocks' worth to L residual streams plus one block's,
    /// for one more forward pass of the blocks per step. The gradients are the same to the bit.
    /// Takes effect at the next <see cref="Forward"/>.
    /// </summary>
    public bool Recompute { get; set; }

    /// <summary>Floats held for the backward pass by the last <see cref="Forward"/>: block inputs, block activations, final norm, logits.</summary>
    public long ActivationFloats =>
        _inputs.Sum(a => (long)a.Length) + _layers.Sum(a => a.Floats) + _finalInput.Length + _finalNorm.Length + _finalRstd.Length + _logits.Length;

    /// <summary>
    /// Logits [batch·seqLen, vocab] of <paramref name="tokens"/> ([batch, seqLen], each sequence from position 0). The
    /// array belongs to the model and is overwritten by the next forward pass.
    /// </summary>
    public float[] Forward(ReadOnlySpan<int> tokens, int batch, int seqLen)
    {
        var c = Config;
        if (batch <= 0 || seqLen <= 0 || tokens.Length != batch * seqLen) throw new ArgumentException($"tokens must hold {batch}×{seqLen} ids", nameof(tokens));
        EnsureActivations(batch, seqLen);
        int n = batch * seqLen;
        _tokens = tokens.ToArray();
        EmbeddingOp.Forward(tokens, Embedding, _inputs[0]);
        for (int l = 0; l < c.NumLayers; l++)
            BlockForward(l, _inputs[l], l + 1 < c.NumLayers ? _inputs[l + 1] : _finalInput);
        RmsNormOp.Forward(_finalInput, FinalNorm.Value, _finalNorm, _finalRstd, n, c.RmsNormEps);
        LinearOp.Forward(_finalNorm, LmHead, null, _logits, n);
        return _logits;
    }

    /// <summary>Block <paramref name="layer"/>'s activations: its own, or the one shared set when recomputing.</summary>
    private BlockActivations Kept(int layer) => _layers[_recomputing ? 0 : layer];

    private void BlockForward(int layer, float[] input, Span<float> output)
    {
        var c = Config;
        var b = Blocks[layer];
        var a = Kept(layer);
        var shape = c.Layer(layer);
        int n = _batch * _seqLen, d = c.HiddenSize, qDim = shape.Heads * c.HeadDim, kvDim = shape.KvHeads * c.HeadDim, ffn = shape.IntermediateSize;
        float eps = c.RmsNormEps;

        RmsNormOp.Forward(input, b.AttnNorm.Value, a.Norm1, a.Rstd1, n, eps);
        bool qkNorm = b.QNorm is not null;
        LinearOp.Forward(a.Norm1, b.Q, b.QBias, qkNorm ? a.QRaw : a.Q, n);
        LinearOp.Forward(a.Norm1, b.K, b.KBias, qkNorm ? a.KRaw : a.K, n);
        LinearOp.Forward(a.Norm1, b.V, b.VBias, a.V, n);
        if (qkNorm)
        {
            RmsNormOp.Forward(a.QRaw, b.QNorm!.Value, a.Q, a.QRstd, n * shape.Heads, eps);
            RmsNormOp.Forward(a.KRaw, b.KNorm!.Value, a.K, a.KRstd, n * shape.KvHeads, eps);
        }
        RopeOp.Forward(_rope, a.Q.AsSpan(0, n * qDim), n, _seqLen, _cos, _sin);
        RopeOp.Forward(_rope, a.K.AsSpan(0, n * kvDim), n, _seqLen, _cos, _sin);
        _attention[layer].Forward(a.Q, a.K, a.V, a.Attention, a.Probabilities, _batch, _seqLen);
        var residual = _residual.AsSpan(0, n * d);
        var mid = a.Mid.AsSpan(0, n * d);
        LinearOp.Forward(a.Attention, b.O, null, residual, n);
        TensorPrimitives.Add(input, residual, mid);

        RmsNormOp.Forward(mid, b.FfnNorm.Value, a.Norm2, a.Rstd2, n, eps);
        LinearOp.Forward(a.Norm2, b.Gate, null, a.Gate, n);
        LinearOp.Forward(a.Norm2, b.Up, null, a.Up, n);
        SwiGluOp.Forward(a.Gate.AsSpan(0, n * ffn), a.Up, a.Act);
        LinearOp.Forward(a.Act, b.Down, null, residual, n);
        TensorPrimitives.Add(mid, residual, output[..(n * d)]);
    }

    /// <summary>
    /// The final hidden states of the last <see cref="Forward"/> ([batch·seqLen, hiddenSize], after the final norm: what
    /// lm_head reads). Overwritten by the next forward pass.
    /// </summary>
    public ReadOnlySpan<float> FinalHidden => _finalNorm.AsSpan(0, _batch * _seqLen * Config.HiddenSize);

    /// <summary>
    /// Adds ∂L/∂θ into every parameter's gradient, given <paramref name="dLogits"/> = ∂L/∂logits of the last
    /// <see cref="Forward"/> ([batch·seqLen, vocab]). The block's steps run in reverse order of the forward. With a loss on
    /// the final hidden states too, <paramref name="dHidden"/> = ∂L/∂<see cref="FinalHidden"/> joins the gradient lm_head
    /// passes back (empty for none).
    /// </summary>
    public void Backward(ReadOnlySpan<float> dLogits, ReadOnlySpan<float> dHidden = default)
    {
        var c = Config;
        int n = _batch * _seqLen, d = c.HiddenSize;
        if (n == 0) throw new InvalidOperationException("Backward needs a Forward first");
        if (dLogits.Length != n * c.VocabSize) throw new ArgumentException($"dLogits must hold {n}×{c.VocabSize} floats", nameof(dLogits));
        var dx = Zeroed(_dx, n * d);
        var dNorm = Zeroed(_dNorm, n * d);
        LinearBackward(dLogits, _finalNorm, LmHead, null, dNorm, n);
        if (!dHidden.IsEmpty)
        {
            if (dHidden.Length != n * d) throw new ArgumentException($"dHidden must hold {n}×{d} floats", nameof(dHidden));
            TensorPrimitives.Add(dNorm, dHidden, dNorm);
        }
        RmsNormOp.Backward(dNorm, _finalInput, FinalNorm.Value, _finalRstd, dx, FinalNorm.GradTarget, n);
        BackwardThroughBlocks();
        if (!Embedding.Frozen) EmbeddingOp.Backward(_tokens, dx, Embedding);
    }

    /// <summary>
    /// The blocks alone on hidden states <paramref name="hidden"/> ([batch·seqLen, hiddenSize], each sequence from
    /// position 0, as the embedding or an earlier block would give them): the last block's output, before the final
    /// norm. Block-wise reconstruction (AutoRound) trains one block on its calibration inputs this way. The span belongs
    /// to the model and is overwritten by the next forward pass.
    /// </summary>
    public ReadOnlySpan<float> ForwardBlocks(ReadOnlySpan<float> hidden, int batch, int seqLen)
    {
        var c = Config;
        if (batch <= 0 || seqLen <= 0 || hidden.Length != batch * seqLen * c.HiddenSize)
            throw new ArgumentException($"hidden must hold {batch}×{seqLen}×{c.HiddenSize} floats", nameof(hidden));
        EnsureActivations(batch, seqLen);
        _tokens = [];
        hidden.CopyTo(_inputs[0]);
        for (int l = 0; l < c.NumLayers; l++)
            BlockForward(l, _inputs[l], l + 1 < c.NumLayers ? _inputs[l + 1] : _finalInput);
        return _finalInput.AsSpan(0, hidden.Length);
    }

    /// <summary>Adds ∂L/∂θ into the blocks' parameter gradients, given <paramref name="dOutput"/> = ∂L/∂(output of the last <see cref="ForwardBlocks"/>).</summary>
    public void BackwardBlocks(ReadOnlySpan<float> dOutput)
    {
        int n = _batch * _seqLen, d = Config.HiddenSize;
        if (n == 0) throw new InvalidOperationException("BackwardBlocks needs a ForwardBlocks first");
        if (dOutput.Length != n * d) throw new ArgumentException($"dOutput must hold {n}×{d} floats", nameof(dOutput));
        dOutput.CopyTo(_dx);
        BackwardThroughBlocks();
    }

    /// <summary>The blocks' backward, last to first: _dx holds ∂L/∂(last block output) on entry and ∂L/∂(first block input) on return.</summary>
    private void BackwardThroughBlocks()
    {
        for (int l = Config.NumLayers - 1; l >= 0; l--)
        {
            // The block's output is not needed again (its gradient is in _dx): _dNorm takes it.
            if (_recomputing) BlockForward(l, _inputs[l], _dNorm);
            BlockBackward(l);
        }
    }

    /// <summary>∂L/∂Y [n, out] and X [n, in] of one linear's backward, with its weight: what per-position gradient statistics read.</summary>
    public delegate void LinearBackwardObserver(Parameter weight, ReadOnlySpan<float> dy, ReadOnlySpan<float> x, int n);

    /// <summary>
    /// Called after each linear's backward (lm_head's first, then each block's in reverse), while ∂L/∂Y is still at hand:
    /// the weight gradient dYᵀ·X sums every position's outer product, which a statistic per position needs apart.
    /// </summary>
    public LinearBackwardObserver? ObserveLinearBackward { get; set; }

    private void LinearBackward(ReadOnlySpan<float> dy, ReadOnlySpan<float> x, Parameter weight, Parameter? bias, Span<float> dx, int n)
    {
        LinearOp.Backward(dy, x, weight, bias, dx, n);
        ObserveLinearBackward?.Invoke(weight, dy[..(n * weight.Rows)], x[..(n * weight.Columns)], n);
    }

    /// <summary>Block <paramref name="layer"/>'s backward: _dx holds ∂L/∂(block output) on entry and ∂L/∂(block input) on return.</summary>
    private void BlockBackward(int layer)
    {
        var c = Config;
        var b = Blocks[layer];
        var a = Kept(layer);
        var shape = c.Layer(layer);
        int n = _batch * _seqLen, d = c.HiddenSize, hd = c.HeadDim, qDim = shape.Heads * hd, kvDim = shape.KvHeads * hd, ffn = shape.IntermediateSize;
        var dx = _dx.AsSpan(0, n * d);

        // MLP: output = Mid + down(SwiGLU(gate(norm(Mid)), up(norm(Mid)))); dx passes the residual unchanged.
        var dAct = Zeroed(_dAct, n * ffn);
        LinearBackward(dx, a.Act, b.Down, null, dAct, n);
        var dGate = Zeroed(_dGate, n * ffn);
        var dUp = Zeroed(_dUp, n * ffn);
        SwiGluOp.Backward(dAct, a.Gate.AsSpan(0, n * ffn), a.Up, dGate, dUp);
        var dNorm = Zeroed(_dNorm, n * d);
        LinearBackward(dGate, a.Norm2, b.Gate, null, dNorm, n);
        LinearBackward(dUp, a.Norm2, b.Up, null, dNorm, n);
        RmsNormOp.Backward(dNorm, a.Mid, b.FfnNorm.Value, a.Rstd2, dx, b.FfnNorm.GradTarget, n);

        // Attention: Mid = Input + o(attention(rope(q), rope(k), v)) with q, k, v from norm(Input).
        var dAttention = Zeroed(_dAttention, n * qDim);
        LinearBackward(dx, a.Attention, b.O, null, dAttention, n);
        Zeroed(_dQ, n * qDim);
        Zeroed(_dK, n * kvDim);
        Zeroed(_dV, n * kvDim);
        _attention[layer].Backward(_dAttention, a.Q, a.K, a.V, a.Probabilities, _dQ, _dK, _dV, _batch, _seqLen);
        var dQ = _dQ.AsSpan(0, n * qDim);
        var dK = _dK.AsSpan(0, n * kvDim);
        RopeOp.Backward(_rope, dQ, n, _seqLen, _cos, _negativeSin);
        RopeOp.Backward(_rope, dK, n, _seqLen, _cos, _negativeSin);
        if (b.QNorm is not null && b.KNorm is not null)
        {
            var dQRaw = Zeroed(_dQRaw, n * qDim);
            var dKRaw = Zeroed(_dKRaw, n * kvDim);
            RmsNormOp.Backward(dQ, a.QRaw, b.QNorm.Value, a.QRstd, dQRaw, b.QNorm.GradTarget, n * shape.Heads);
            RmsNormOp.Backward(dK, a.KRaw, b.KNorm.Value, a.KRstd, dKRaw, b.KNorm.GradTarget, n * shape.KvHeads);
            dQ = dQRaw;
            dK = dKRaw;
        }
        dNorm = Zeroed(_dNorm, n * d);
        LinearBackward(dQ, a.Norm1, b.Q, b.QBias, dNorm, n);
        LinearBackward(dK, a.Norm1, b.K, b.KBias, dNorm, n);
        LinearBackward(_dV.AsSpan(0, n * kvDim), a.Norm1, b.V, b.VBias, dNorm, n);
        RmsNormOp.Backward(dNorm, _inputs[layer], b.AttnNorm.Value, a.Rstd1, dx, b.AttnNorm.GradTarget, n);
    }

    private static Span<float> Zeroed(float[] buffer, int length)
    {
        var span = buffer.AsSpan(0, length);
        span.Clear();
        return span;
    }

    private void EnsureActivations(int batch, int seqLen)
    {
        if (batch == _batch && seqLen == _seqLen && _recomputing == Recompute) return;
        var c = Config;
        int n = batch * seqLen, d = c.HiddenSize, hd = c.HeadDim;
        _inputs = [.. Enumerable.Range(0, c.NumLayers).Select(_ => new float[n * d])];
        // One set sized for the widest block when recomputing; otherwise one per block, of its own widths.
        _layers = Recompute
            ? [new BlockActivations(n, d, c.QDim, c.KvDim, c.IntermediateSize, _attention.Max(a => a.ProbabilityCount(batch, seqLen)), c.NumHeads, c.NumKvHeads, c.QkNorm)]
            : [.. Enumerable.Range(0, c.NumLayers).Select(l =>
            {
                var s = c.Layer(l);
                return new BlockActivations(n, d, s.Heads * hd, s.KvHeads * hd, s.IntermediateSize, _attention[l].ProbabilityCount(batch, seqLen), s.Heads, s.KvHeads, c.QkNorm);
            })];
        _finalInput = new float[n * d];
        _finalNorm = new float[n * d];
        _finalRstd = new float[n];
        _logits = new float[n * c.VocabSize];
        (_cos, _sin, _negativeSin) = RopeOp.Tables(_rope, seqLen);
        // Gradient scratch, sized for the widest block and reused by every block's backward.
        _dx = new float[n * d]; _dNorm = new float[n * d]; _residual = new float[n * d];
        _dAct = new float[n * c.IntermediateSize]; _dGate = new float[n * c.IntermediateSize]; _dUp = new float[n * c.IntermediateSize];
        _dAttention = new float[n * c.QDim]; _dQ = new float[n * c.QDim]; _dK = new float[n * c.KvDim]; _dV = new float[n * c.KvDim];
        if (c.QkNorm) { _dQRaw = new float[n * c.QDim]; _dKRaw = new float[n * c.KvDim]; }
        (_batch, _seqLen, _recomputing) = (batch, seqLen, Recompute);
    }
}
