using System.Numerics.Tensors;
using LlmShrink.Compression.Quantization;
using LlmShrink.Formats;
using LlmShrink.Kernels;
using LlmShrink.Model;
using LlmShrink.Representations;

namespace LlmShrink.Compression;

/// <summary>
/// What a compression method sees of one decoder block (or of the head stage, whose one layer is lm_head reading the
/// final norm's output): the block, its layers' dense weights, the statistics of their calibration inputs, and the
/// ways to replace a layer. Methods that rescale (AWQ, SmoothQuant) edit
/// <see cref="Weights"/> and the norm arrays in place and call <see cref="MarkRescaled"/>; the pipeline rebuilds
/// every rescaled layer that no method quantized as a dense layer, so the block stays the same function.
/// </summary>
public sealed class BlockCompression
{
    private readonly TensorSet _checkpoint;
    private readonly Dictionary<InputSite, SiteStatistics> _statistics; // a trial's own copies, made as it reads them
    private readonly Dictionary<LinearRole, float[]> _weights = new();
    private readonly Dictionary<LinearRole, float[]?> _biases = new();
    private readonly Dictionary<LinearRole, CompressedLayer> _results = new();
    private readonly Dictionary<LinearRole, string> _compressedBy = new();
    private readonly HashSet<LinearRole> _rescaled = new();
    private readonly Dictionary<LinearRole, (bool[] Keep, string Pattern)> _masks = new();
    private readonly Dictionary<LinearRole, Linear> _prunedBuilt = new(); // the runtime layer SetPruned built, while its weights stay as they were
    private readonly List<LayerReport> _reports = new();
    private readonly HeadParts? _head;
    private readonly BlockCompression? _trialOf; // a trial's weights and biases start as copies of this context's
    private readonly HashSet<LinearRole> _reshaped = new();
    private readonly Action<LayerShape>? _reshape; // tells the transformer the block's new widths (not in a trial)

    /// <summary>The block's index; in the head stage, the number of blocks (lm_head comes after the last one).</summary>
    public int Layer { get; }
    public ModelConfig Config { get; private set; }
    /// <summary>This block's widths as they are now (structured pruning shrinks them).</summary>
    public LayerShape BlockShape => Config.Layer(Layer);
    /// <summary>The block; null in the head stage, whose one layer is lm_head (<see cref="LinearRole.LmHead"/>).</summary>
    public TransformerBlock? Block { get; }
    /// <summary>The layers of this block the current modifier targets.</summary>
    public IReadOnlyList<LinearRole> Targets { get; internal set; } = [];
    /// <summary>Layers a later modifier of the recipe targets too: a method that would quantize them only prepares them (stacking).</summary>
    public IReadOnlySet<LinearRole> TargetedLater { get; internal set; } = new HashSet<LinearRole>();
    internal string MethodName { get; set; } = "";

    /// <summary>
    /// The calibration samples' hidden states entering this block, one array of sequence length × hidden size per sample:
    /// the outputs of the blocks before it as they were compressed. Set when a modifier needs <see cref="StatisticsNeeds.BlockOutputs"/>
    /// or <see cref="StatisticsNeeds.ReferenceOutputs"/>.
    /// </summary>
    public IReadOnlyList<float[]> BlockInputs { get; internal init; } = [];
    /// <summary>The uncompressed block's outputs on <see cref="BlockInputs"/> (<see cref="StatisticsNeeds.BlockOutputs"/>).</summary>
    public IReadOnlyList<float[]> BlockOutputs { get; internal init; } = [];
    /// <summary>
    /// The uncompressed model's hidden states after this block for the same samples (<see cref="StatisticsNeeds.ReferenceOutputs"/>):
    /// what the block should output were it to undo the error the compressed blocks before it hand it as well.
    /// </summary>
    public IReadOnlyList<float[]> ReferenceOutputs { get; internal init; } = [];
    internal Action<double>? Progress { get; init; }
    /// <summary>The pipeline's cancellation, for a method whose work on one block is long (block reconstruction).</summary>
    public CancellationToken Cancellation { get; internal init; }

    /// <summary>Tells the pipeline's progress how much of the current method's work on this block is done, in [0, 1].</summary>
    public void ReportProgress(double done) => Progress?.Invoke(done);

    /// <summary>The checkpoint's stored RoPE frequency factors (llama3-style models from GGUF), or null.</summary>
    public float[]? RopeFrequencyFactors() => _checkpoint.Find(TensorNames.RopeFrequencyFactors)?.ToFloatArray();

    /// <param name="head">For the head stage (block null): the transformer whose lm_head and final norm are compressed and rescaled.</param>
    /// <param name="reshape">Receives the block's new widths when a method removes heads or channels.</param>
    internal BlockCompression(int layer, ModelConfig config, TransformerBlock? block, TensorSet checkpoint,
        IReadOnlyDictionary<InputSite, SiteStatistics> statistics, Transformer? head = null, Action<LayerShape>? reshape = null)
    {
        _reshape = reshape;
        if ((block is null) == (head is null)) throw new ArgumentException("a stage is either a block or the head");
        _head = head is null ? null : new HeadParts(head.LmHead, head.FinalNorm, head);
        Layer = layer;
        Config = config;
        Block = block;
        _checkpoint = checkpoint;
        _statistics = new(statistics); // the same objects: methods update them in place
    }

    /// <summary>
    /// A trial of <paramref name="parent"/>: its own copy of the block's norms (or of the final norm), weights, biases,
    /// masks and statistics.
    /// </summary>
    private BlockCompression(BlockCompression parent)
    {
        Layer = parent.Layer;
        Config = parent.Config;
        Block = parent.Block is null ? null : CopyOf(parent.Block);
        _head = parent._head is null ? null : new HeadParts(parent._head.LmHead, (float[])parent._head.FinalNorm.Clone(), null);
        _checkpoint = parent._checkpoint;
        // Statistics are copied only when the trial reads them: a down_proj Hessian of a 1B model is half a gigabyte,
        // and a trial of q/k/v never touches it.
        _statistics = new Dictionary<InputSite, SiteStatistics>();
        _trialOf = parent;
        foreach (var (role, mask) in parent._masks) _masks[role] = ((bool[])mask.Keep.Clone(), mask.Pattern);
    }

    public SiteStatistics Statistics(InputSite site) =>
        TryStatistics(site, out var s) ? s : throw new InvalidOperationException($"no statistics were gathered for {site}");

    private bool TryStatistics(InputSite site, out SiteStatistics statistics)
    {
        if (_statistics.TryGetValue(site, out statistics!)) return true;
        if (_trialOf is null || !_trialOf.TryStatistics(site, out var parent)) return false;
        statistics = _statistics[site] = parent.Copy();
        return true;
    }

    /// <summary>The layer's current dense weights, row-major [out, in]: the checkpoint's, or as a method rescaled them.</summary>
    public float[] Weights(LinearRole role)
    {
        if (_compressedBy.TryGetValue(role, out var by))
            throw new ShrinkException($"recipe conflict: {MethodName} targets {LinearRoles.ModulePath(Layer, role)}, which {by} already quantized; " +
                "among the modifiers targeting a layer, the one that quantizes it must come last (only a compensation of its error, eora, may follow)");
        // The block's layer usually holds the weights decoded already (it just ran on the calibration inputs): take them over.
        if (!_weights.TryGetValue(role, out var w))
            _weights[role] = w = _trialOf is not null ? (float[])_trialOf.Weights(role).Clone()
                : (Current(role) as DenseLinear)?.DetachDecoded() ?? StoredWeight(role).ToFloatArray();
        return w;
    }

    /// <summary>The float type a changed layer nobody quantized is stored as: the checkpoint's F16/BF16 when it was only pruned, else F32.</summary>
    private TensorType DenseType(LinearRole role)
    {
        var stored = StoredWeight(role).Type;
        return !_rescaled.Contains(role) && stored is TensorType.F16 or TensorType.BF16 ? stored : TensorType.F32;
    }

    /// <summary>The type the checkpoint stores the layer's weight in (F32, F16, BF16, or a ggml block type).</summary>
    public TensorType SourceType(LinearRole role) => StoredWeight(role).Type;

    private StoredTensor StoredWeight(LinearRole role) =>
        _checkpoint.Get(role != LinearRole.LmHead ? TensorNames.Layer(Layer, LinearRoles.WeightSuffix(role))
            : Config.TiedEmbeddings ? TensorNames.Embedding : TensorNames.LmHead);

    /// <summary>
    /// H of <paramref name="role"/>'s input for a method that overwrites it (GPTQ and SparseGPT factor it in place): handed
    /// over when no other layer of the block will still read it — every other reader is quantized and no later modifier
    /// targets a reader — which frees down_proj's gigabyte as soon as possible; otherwise a copy.
    /// </summary>
    public double[] HessianToConsume(LinearRole role)
    {
        var site = LinearRoles.Site(role);
        var statistics = Statistics(site);
        bool last = Readers(site).All(r => r == role || IsCompressed(r)) && !TargetedLater.Any(r => LinearRoles.Site(r) == site);
        return last ? statistics.TakeHessian() : (double[])statistics.Hessian().Clone();
    }

    /// <summary>The layer's bias (q/k/v of Qwen2-style models), or null: the checkpoint's, or as a fold rescaled it.</summary>
    public float[]? Bias(LinearRole role)
    {
        if (!_biases.TryGetValue(role, out var b))
            _biases[role] = b = _trialOf is not null ? (float[]?)_trialOf.Bias(role)?.Clone()
                : LinearRoles.BiasSuffix(role) is { } suffix ? _checkpoint.Find(TensorNames.Layer(Layer, suffix))?.ToFloatArray() : null;
        return b;
    }

    /// <summary>Rows (output features) and columns (input features) of a layer.</summary>
    public (int Rows, int Columns) Shape(LinearRole role)
    {
        var l = Current(role);
        return (l.OutFeatures, l.InFeatures);
    }

    private Linear Current(LinearRole role) => role == LinearRole.LmHead ? _head!.LmHead : LinearRoles.Get(Block!, role);

    /// <summary>The head stage's lm_head and final norm weight: the transformer's own (<paramref name="Owner"/> gets every new lm_head), or a trial's copies.</summary>
    private sealed class HeadParts(Linear lmHead, float[] finalNorm, Transformer? owner)
    {
        public Linear LmHead { get; private set; } = lmHead;
        public float[] FinalNorm { get; } = finalNorm;

        public void Replace(Linear linear)
        {
            LmHead = linear;
            if (owner is not null) owner.LmHead = linear;
        }
    }

    private void Replace(LinearRole role, Linear linear)
    {
        if (role == LinearRole.LmHead) _head!.Replace(linear);
        else LinearRoles.Set(Block!, role, linear);
    }

    /// <summary>Whether a method has already replaced the layer in this block.</summary>
    public bool IsCompressed(LinearRole role) => _results.ContainsKey(role);

    /// <summary>Records that <see cref="Weights"/>(role) was edited in place (its function must be kept).</summary>
    public void MarkRescaled(LinearRole role)
    {
        _rescaled.Add(role);
        _prunedBuilt.Remove(role);
    }

    /// <summary>
    /// The input sites in an order in which every fold of <see cref="ScaleInputChannels"/> lands before the layers it
    /// changes are handled: down_proj's scale goes into up_proj's rows (read at MlpInput), o_proj's into v_proj's
    /// rows (read at AttentionInput); the norms are no layer. lm_head's input (the final norm's) only occurs in the head stage.
    /// </summary>
    public static readonly InputSite[] FoldOrder = [InputSite.MlpHidden, InputSite.AttentionOutput, InputSite.MlpInput, InputSite.AttentionInput, InputSite.LmHeadInput];

    /// <summary>The layers that read <paramref name="site"/>'s input.</summary>
    public static IReadOnlyList<LinearRole> Readers(InputSite site) => Enum.GetValues<LinearRole>().Where(r => LinearRoles.Site(r) == site).ToList();

    /// <summary>Whether <paramref name="site"/> is an RMSNorm's output, so a scale on its channels folds into the norm weight.</summary>
    public static bool FollowsNorm(InputSite site) => site is InputSite.AttentionInput or InputSite.MlpInput or InputSite.LmHeadInput;

    /// <summary>
    /// Whether a scale on <paramref name="site"/>'s input channels can be folded into its producer. The attention
    /// output is linear in V per head, so dividing v_proj's output rows divides it — but only when every query head
    /// has its own V head: with grouped-query attention the channels of o_proj's input and of v_proj's output differ
    /// (llm-awq skips the v→o pair then too).
    /// </summary>
    public bool CanScaleInput(InputSite site) => site != InputSite.AttentionOutput || BlockShape.Heads == BlockShape.KvHeads;

    /// <summary>
    /// Removes key/value heads <paramref name="kvHeads"/> with the query heads that read them: their rows of q/k/v (and
    /// biases), their columns of o_proj, and o_proj's input statistics for those columns. The layers become smaller dense
    /// layers that later modifiers take over; call it before any modifier quantizes them.
    /// </summary>
    public void RemoveKvGroups(IReadOnlyCollection<int> kvHeads)
    {
        var shape = BlockShape;
        if (kvHeads.Count >= shape.KvHeads) throw new ShrinkException($"recipe conflict: {MethodName} would remove all {shape.KvHeads} key/value heads of block {Layer}");
        var (w, newShape) = StructuredSlicing.RemoveKvGroups(new StructuredSlicing.AttentionWeights(Weights(LinearRole.Q), Weights(LinearRole.K),
            Weights(LinearRole.V), Weights(LinearRole.O), Bias(LinearRole.Q), Bias(LinearRole.K), Bias(LinearRole.V)), shape, Config.HeadDim, kvHeads);
        int group = shape.Heads / shape.KvHeads;
        var keptColumns = Enumerable.Range(0, shape.KvHeads).Where(h => !kvHeads.Contains(h))
            .SelectMany(h => Enumerable.Range(h * group * Config.HeadDim, group * Config.HeadDim)).ToArray();
        Reshape(newShape, [(LinearRole.Q, w.Q, w.QBias), (LinearRole.K, w.K, w.KBias), (LinearRole.V, w.V, w.VBias), (LinearRole.O, w.O, null)],
            InputSite.AttentionOutput, keptColumns);
    }

    /// <summary>Removes MLP channels: rows of gate/up, columns of down_proj and of down_proj's input statistics (see <see cref="RemoveKvGroups"/>).</summary>
    public void RemoveFfnChannels(IReadOnlyCollection<int> channels)
    {
        var shape = BlockShape;
        if (channels.Count >= shape.IntermediateSize) throw new ShrinkException($"recipe conflict: {MethodName} would remove every MLP channel of block {Layer}");
        var (w, newShape) = StructuredSlicing.RemoveChannels(new StructuredSlicing.MlpWeights(Weights(LinearRole.Gate), Weights(LinearRole.Up), Weights(LinearRole.Down)),
            shape, channels);
        var kept = Enumerable.Range(0, shape.IntermediateSize).Where(c => !channels.Contains(c)).ToArray();
        Reshape(newShape, [(LinearRole.Gate, w.Gate, null), (LinearRole.Up, w.Up, null), (LinearRole.Down, w.Down, null)], InputSite.MlpHidden, kept);
    }

    private void Reshape(LayerShape shape, (LinearRole Role, float[] Weights, float[]? Bias)[] layers, InputSite narrowed, int[] keptColumns)
    {
        foreach (var (role, _, _) in layers)
            if (_masks.ContainsKey(role)) throw new ShrinkException($"recipe conflict: {MethodName} reshapes {LinearRoles.ModulePath(Layer, role)}, which an earlier modifier pruned; remove heads or channels first");
        Config = Config.WithLayerShapes([.. Enumerable.Range(0, Config.NumLayers).Select(l => l == Layer ? shape : Config.Layer(l))]);
        foreach (var (role, weights, bias) in layers)
        {
            int rows = role == LinearRole.Q ? shape.Heads * Config.HeadDim : role is LinearRole.K or LinearRole.V ? shape.KvHeads * Config.HeadDim
                : role is LinearRole.Gate or LinearRole.Up ? shape.IntermediateSize : Config.HiddenSize;
            _weights[role] = weights;
            _biases[role] = bias;
            _reshaped.Add(role);
            // A narrower layer has no output error of its own to report (its outputs or inputs are fewer); the block's is in the KL.
            var (oldRows, oldColumns) = Shape(role);
            _reports.Add(new LayerReport(LinearRoles.ModulePath(Layer, role), MethodName, $"dense [{rows}, {weights.Length / rows}], was [{oldRows}, {oldColumns}]",
                double.NaN, 8.0 * TensorTypes.ByteCount(DenseType(role), weights.Length), weights.Length));
            Replace(role, new DenseLinear(weights, rows, weights.Length / rows, bias));
        }
        if (TryStatistics(narrowed, out var statistics)) statistics.KeepChannels(keptColumns);
        _reshape?.Invoke(shape);
    }

    /// <summary>
    /// Multiplies input channel j of every layer reading <paramref name="site"/> by s_j (W ← W·diag(s)) and divides
    /// the producer of that input by s_j, so the block computes the same function (AWQ §3.2, SmoothQuant §4):
    /// AttentionInput → input_layernorm weight; MlpInput → post_attention_layernorm weight; LmHeadInput → the final norm
    /// weight (model.norm; lm_head's columns take s, a tied embedding matrix is left as it is); MlpHidden = SiLU(gate)·up
    /// → up_proj's output rows; AttentionOutput → v_proj's output rows (and bias). The site's statistics are rescaled
    /// to describe the new input X·diag(s)⁻¹, so later searches and the report see the layers as they now are.
    /// Every layer this touches must still be dense: call it before quantizing any of them.
    /// </summary>
    public void ScaleInputChannels(InputSite site, float[] s)
    {
        if (!CanScaleInput(site)) throw new InvalidOperationException($"{site} cannot be rescaled with grouped-query attention");
        int columns = Current(Readers(site)[0]).InFeatures;
        if (s.Length != columns) throw new ArgumentException($"{site} has {columns} channels, not {s.Length}", nameof(s));
        foreach (float v in s)
            if (!(v > 0 && float.IsFinite(v))) throw new ArgumentException($"scales must be positive and finite, not {v}", nameof(s));
        LinearRole? producer = site switch { InputSite.MlpHidden => LinearRole.Up, InputSite.AttentionOutput => LinearRole.V, _ => null };
        foreach (var role in producer is { } p ? Readers(site).Append(p) : Readers(site))
            if (_results.ContainsKey(role))
                throw new ShrinkException($"recipe conflict: {MethodName} rescales the input of {ReaderNames(site)} in block {Layer}, which changes " +
                    $"{LinearRoles.ModulePath(Layer, role)}, already compressed by an earlier modifier; let {MethodName} target it too or put {MethodName} first");

        foreach (var role in Readers(site))
        {
            var (rows, _) = Shape(role);
            var w = Weights(role);
            for (int r = 0; r < rows; r++) TensorPrimitives.Multiply(w.AsSpan(r * columns, columns), s, w.AsSpan(r * columns, columns));
            MarkRescaled(role);
        }
        switch (site)
        {
            case InputSite.AttentionInput: TensorPrimitives.Divide(Block!.AttnNorm, s, Block.AttnNorm); break;
            case InputSite.MlpInput: TensorPrimitives.Divide(Block!.FfnNorm, s, Block.FfnNorm); break;
            case InputSite.LmHeadInput: TensorPrimitives.Divide(_head!.FinalNorm, s, _head.FinalNorm); break;
            default:
                {
                    var role = producer!.Value;
                    var w = Weights(role);
                    var (_, inputs) = Shape(role);
                    for (int r = 0; r < columns; r++) TensorPrimitives.Divide(w.AsSpan(r * inputs, inputs), s[r], w.AsSpan(r * inputs, inputs));
                    if (Bias(role) is { } bias) TensorPrimitives.Divide(bias, s, bias);
                    MarkRescaled(role);
                    break;
                }
        }
        if (TryStatistics(site, out var statistics)) statistics.DivideChannels(s);
    }

    private static string ReaderNames(InputSite site) => string.Join("/", Readers(site).Select(LinearRoles.ModuleName));

    /// <summary>
    /// The layer's keep-mask (true = kept, row-major [out, in]) when an earlier modifier pruned it, else null. Quantizers
    /// keep pruned weights at exactly zero (<see cref="SetQuantized"/> enforces it), so pruning and quantizing stack.
    /// </summary>
    public bool[]? Mask(LinearRole role) => _masks.TryGetValue(role, out var m) ? m.Keep : null;

    /// <summary>
    /// Records a pruning decision: <paramref name="pruned"/> (pruned entries 0, the rest possibly updated, as SparseGPT does)
    /// replaces the layer's weights and <paramref name="keep"/> becomes its mask. The layer stays float for later
    /// modifiers; if none quantizes it, it is stored in the checkpoint's own float type.
    /// </summary>
    public void SetPruned(LinearRole role, float[] pruned, bool[] keep, string pattern)
    {
        var (rows, columns) = Shape(role);
        if (pruned.Length != (long)rows * columns || keep.Length != pruned.Length) throw new ArgumentException($"{rows}×{columns} weights and mask entries are needed");
        var before = Weights(role);
        // Built in the type it will be stored in if no later modifier quantizes it: the next layers calibrate on what the
        // checkpoint computes, and a 16-bit build holds half the bytes of a float32 one.
        var layer = new DenseLayer(Layer, role, pruned, rows, columns, Bias(role)) { Sparsity = pattern, StoredType = DenseType(role) };
        var linear = layer.Build();
        _reports.Add(new LayerReport(layer.ModulePath, MethodName, layer.Describe(), RelativeOutputError(role, before, linear), layer.StoredBits, (long)rows * columns));
        _weights[role] = pruned;
        _masks[role] = (keep, pattern);
        _prunedBuilt[role] = linear;
        Replace(role, linear);
        CollectLayerGarbage();
    }

    /// <param name="pruned">The mask and pattern when the same method also pruned the layer (SparseGPT's joint pass).</param>
    public void SetQuantized(LinearRole role, QuantizedMatrix matrix, (bool[] Keep, string Pattern)? pruned = null)
    {
        if (pruned is { } p) _masks[role] = p;
        var keep = Mask(role);
        if (keep is not null) KeepPrunedAtZero(matrix, keep);
        Set(LayerRepresentations.Store(new QuantizedLayer(Layer, role, matrix, Bias(role)) { Sparsity = _masks.GetValueOrDefault(role).Pattern }, keep));
    }

    public void SetW8A8(LinearRole role, sbyte[] weights, float[] scales)
    {
        var (rows, columns) = Shape(role);
        if (Mask(role) is { } keep)
            for (int i = 0; i < weights.Length; i++) if (!keep[i]) weights[i] = 0;
        Set(new W8A8Layer(Layer, role, weights, scales, rows, columns, Bias(role)) { Sparsity = _masks.GetValueOrDefault(role).Pattern });
    }

    /// <summary>
    /// Stores the layer as ggml blocks of <paramref name="type"/>: <paramref name="blocks"/> holds its rows, each a whole number
    /// of blocks as <see cref="GgmlQuantizers.Quantize"/> wrote them. When an earlier modifier pruned the layer, every pruned
    /// weight must decode to exactly 0, and the blocks are checked rather than patched. Types whose blocks are symmetric,
    /// w = d·(q − offset) (Q8_0, Q5_0, Q4_0, Q3_K, Q6_K), have a level at exactly 0 and their quantizers round a 0 weight to
    /// it (llama.cpp's quantize_row_*_ref and the imatrix searches all take the nearest level), so a pruned layer keeps its
    /// zeros unchanged. Types with an offset, w = d·q − m (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K), have 0 among their levels only when
    /// m happens to be a multiple of d: a pruned weight would come back as a small nonzero value, silently un-pruning the
    /// layer, and forcing it to 0 would need blocks llama.cpp's format has no way to express. Such a stacking is refused at
    /// the first pruned weight that does not decode to 0 (in practice in the first layer); a layer whose pruned weights all
    /// happen to land on 0 is exact and kept.
    /// </summary>
    public void SetGgml(LinearRole role, TensorType type, byte[] blocks)
    {
        var (rows, columns) = Shape(role);
        var layer = new GgmlTypeLayer(Layer, role, type, blocks, rows, columns, Bias(role)) { Sparsity = _masks.GetValueOrDefault(role).Pattern };
        if (Mask(role) is { } keep && layer.PrunedNonzero(keep) is var (row, column, value))
            throw new ShrinkException($"recipe conflict: {MethodName} {type} cannot keep {layer.ModulePath}'s pruned weights at 0 (weight [{row}, {column}] decodes to {value.ToString("E2", System.Globalization.CultureInfo.InvariantCulture)}): " +
                $"{type} blocks have an offset, so 0 need not be a level; quantize pruned layers to a type without one (Q8_0, Q6_K, Q5_0, Q4_0, Q3_K)");
        Set(layer);
    }

    /// <summary>
    /// Stores the layer as two factors U [out, rank] and V [rank, in] (a low-rank method), each a compressed layer of its own
    /// (float, or quantized). A pruned layer cannot be factored without losing its zeros, so
    /// a low-rank modifier after a pruning one is refused.
    /// </summary>
    public void SetLowRank(LinearRole role, CompressedLayer u, CompressedLayer v)
    {
        if (_masks.ContainsKey(role))
            throw new ShrinkException($"recipe conflict: {MethodName} would factor {LinearRoles.ModulePath(Layer, role)}, which an earlier modifier pruned; factors have no zeros to keep");
        Set(new LowRankLayer(Layer, role, u, v, Bias(role)));
    }

    /// <summary>
    /// The layer an earlier modifier of this block stored for <paramref name="role"/>, and the float weights that modifier
    /// started from (kept for a modifier that targets the layer after it, see <see cref="Set"/>): what a compensation of
    /// the compression error needs. A layer no earlier modifier stored (untouched, or only pruned or rescaled) is a recipe
    /// conflict.
    /// </summary>
    public (CompressedLayer Layer, float[] Before) Compressed(LinearRole role)
    {
        if (!_results.TryGetValue(role, out var layer))
            throw new ShrinkException($"recipe conflict: {MethodName} targets {LinearRoles.ModulePath(Layer, role)}, which no earlier modifier quantized; " +
                $"put a quantizing modifier (gptq, rtn, awq, ggml, …) on it before {MethodName}");
        return (layer, _weights[role]);
    }

    /// <summary>
    /// Adds a low-rank compensation B·A of the compression error to the layer an earlier modifier stored: the layer becomes
    /// a <see cref="CompensatedLayer"/> computing base(x) + B·A·x, and its report line measures it against the weights that
    /// earlier modifier started from. A layer is compensated at most once.
    /// </summary>
    public void SetCompensation(LinearRole role, LowRank.LowRankFactors factors, TensorType storedType)
    {
        var (layer, before) = Compressed(role);
        if (layer is CompensatedLayer)
            throw new ShrinkException($"recipe conflict: {MethodName} would compensate {layer.ModulePath} twice; one compensation modifier per layer");
        var compensated = new CompensatedLayer(layer, factors, storedType);
        var linear = compensated.Build();
        _reports.Add(new LayerReport(compensated.ModulePath, MethodName, compensated.Describe(), RelativeOutputError(role, before, linear),
            compensated.StoredBits, (long)compensated.Rows * compensated.Columns));
        _results[role] = compensated;
        if (!TargetedLater.Contains(role)) _weights.Remove(role);
        Replace(role, linear);
        CollectLayerGarbage();
    }

    /// <summary>Records in the report that the current method leaves the layer as it is, and why (e.g. a rank that would not save anything).</summary>
    public void KeepDense(LinearRole role, string reason)
    {
        var (rows, columns) = Shape(role);
        _reports.Add(new LayerReport(LinearRoles.ModulePath(Layer, role), MethodName, $"kept dense: {reason}", 0,
            8.0 * TensorTypes.ByteCount(SourceType(role), (long)rows * columns), (long)rows * columns));
    }

    /// <summary>Pruned weights take their group's zero code (value exactly 0): a quantizer that moved them would undo the pruning.</summary>
    private static void KeepPrunedAtZero(QuantizedMatrix m, bool[] keep)
    {
        for (int r = 0; r < m.Rows; r++)
            for (int c = 0; c < m.Columns; c++)
                if (!keep[r * m.Columns + c]) m.Codes[r * m.Columns + c] = (byte)m.Zeros[m.GroupIndex[c] * m.Rows + r];
    }

    private void Set(CompressedLayer layer)
    {
        var original = Weights(layer.Role);
        var (rows, columns) = Shape(layer.Role);
        var linear = layer.Build();
        _reports.Add(new LayerReport(layer.ModulePath, MethodName, layer.Describe(),
            RelativeOutputError(layer.Role, original, linear), layer.StoredBits, (long)rows * columns));
        _results[layer.Role] = layer;
        _compressedBy[layer.Role] = MethodName;
        // Rescaled or pruned layers nobody quantized need their dense weights at the end; a quantized one only while a
        // later modifier targets it (a compensation of its error starts from them, see Compressed).
        if (!TargetedLater.Contains(layer.Role)) _weights.Remove(layer.Role);
        Replace(layer.Role, linear);
        CollectLayerGarbage();
    }

    /// <summary>
    /// The layer's replaced weights and the method's temporaries (GPTQ/SparseGPT: W's working copy, H turned into U —
    /// ~1 GB for down_proj) are large-object-heap garbage now. Left to itself the GC ran no gen-2 collection for a whole
    /// llama-2-7b block and the heap grew by every layer's temporaries (SparseGPT-50 without it: 10.6 GB peak RSS within
    /// the first blocks); collecting here keeps only one layer's temporaries alive at a time, for a collection that
    /// costs milliseconds against seconds of work.
    /// </summary>
    private static void CollectLayerGarbage() => GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true);

    /// <summary>
    /// Runs <paramref name="method"/> on <paramref name="roles"/> of this block without committing anything: on copies of
    /// the block's norms, weights, masks and statistics, so the block, its layers and later modifiers see no change. Returns
    /// what the method would produce with each layer's report line (output error, stored bits) — what a planner compares
    /// candidates by. In the head stage, lm_head is tried against a copy of the final norm.
    /// </summary>
    public (IReadOnlyList<CompressedLayer> Layers, IReadOnlyList<LayerReport> Reports) Try(ICompressionMethod method, IReadOnlyList<LinearRole> roles) =>
        Try([method], roles);

    /// <summary>Like <see cref="Try(ICompressionMethod, IReadOnlyList{LinearRole})"/> for methods stacked on the same layers in order (e.g. sparsegpt then gptq).</summary>
    public (IReadOnlyList<CompressedLayer> Layers, IReadOnlyList<LayerReport> Reports) Try(IReadOnlyList<ICompressionMethod> methods, IReadOnlyList<LinearRole> roles)
    {
        var trial = new BlockCompression(this) { Targets = roles };
        for (int i = 0; i < methods.Count; i++)
        {
            trial.MethodName = methods[i].Name;
            trial.TargetedLater = i + 1 < methods.Count ? roles.ToHashSet() : new HashSet<LinearRole>();
            methods[i].CompressBlock(trial);
        }
        return trial.Finish();
    }

    /// <summary>
    /// ‖X Wᵀ − layer(X)‖² / ‖X Wᵀ‖² of a candidate for <paramref name="role"/> against the layer's dense weights as this
    /// context holds them, on the first calibration inputs of its site (bias excluded): the planner's cheap proxy.
    /// </summary>
    internal double RelativeOutputError(LinearRole role, Linear candidate) => RelativeOutputError(role, Weights(role), candidate);

    private static TransformerBlock CopyOf(TransformerBlock b) => new()
    {
        AttnNorm = (float[])b.AttnNorm.Clone(), FfnNorm = (float[])b.FfnNorm.Clone(),
        QNorm = b.QNorm, KNorm = b.KNorm, // never rescaled
        Q = b.Q, K = b.K, V = b.V, O = b.O, Gate = b.Gate, Up = b.Up, Down = b.Down,
    };

    /// <summary>Calibration input rows the report's output error is measured on.</summary>
    internal const int ReportTokens = 256;

    /// <summary>
    /// ‖X Wᵀ − layer(X)‖² / ‖X Wᵀ‖² on the sampled calibration inputs of the layer's site, where W is the layer's
    /// dense weight as the method saw it (after rescaling), so the figure isolates the quantization error.
    /// </summary>
    private double RelativeOutputError(LinearRole role, float[] w, Linear compressed)
    {
        var (rows, columns) = Shape(role);
        var stats = Statistics(LinearRoles.Site(role));
        int n = Math.Min(stats.SampleTokens, ReportTokens);
        if (n == 0) return double.NaN;
        var x = stats.Samples().AsSpan(0, n * columns);
        var exact = new float[n * rows];
        var approx = new float[n * rows];
        unsafe { fixed (float* pw = w) MatMul.Multiply(x, pw, exact, n, columns, rows); }
        var bias = Bias(role); // the compressed layer adds it; the exact product above does not
        compressed.Apply(x, approx, n, WorkerPool.Shared, 0);
        if (bias is not null)
            for (int t = 0; t < n; t++) System.Numerics.Tensors.TensorPrimitives.Subtract(approx.AsSpan(t * rows, rows), bias, approx.AsSpan(t * rows, rows));
        double err = 0, norm = 0;
        for (int i = 0; i < exact.Length; i++) { double d = exact[i] - approx[i]; err += d * d; norm += (double)exact[i] * exact[i]; }
        return norm > 0 ? err / norm : 0;
    }

    /// <summary>
    /// Ends the block: rescaled or pruned layers nobody quantized become dense layers — F32 when rescaled (a fold's
    /// precision is kept), the checkpoint's float type when only pruned — and every changed layer is returned.
    /// </summary>
    internal (IReadOnlyList<CompressedLayer> Layers, IReadOnlyList<LayerReport> Reports) Finish()
    {
        foreach (var role in _rescaled.Union(_masks.Keys).Union(_reshaped).Where(r => !_results.ContainsKey(r)).ToList())
        {
            var (rows, columns) = Shape(role);
            var dense = new DenseLayer(Layer, role, _weights[role], rows, columns, Bias(role)) { StoredType = DenseType(role), Sparsity = _masks.GetValueOrDefault(role).Pattern };
            _results[role] = dense;
            // A pruned layer nothing changed since SetPruned already runs as stored; building it again held a second
            // copy of the block's pruned layers at the block's end, where sparsegpt-50's peak is (0.4 GB of F16 on a
            // llama-2-7b block).
            if (!_prunedBuilt.ContainsKey(role)) Replace(role, dense.Build());
        }
        return (_results.Values.OrderBy(r => r.Role).ToList(), _reports);
    }
}

/// <summary>One line of the compression report.</summary>
public sealed record LayerReport(string Module, string Method, string Scheme, double RelativeOutputError, double StoredBits, long Parameters)
{
    public double BitsPerWeight => StoredBits / Parameters;
}
