using System.Diagnostics;
using LlmShrink.Compression.Recipes;
using LlmShrink.Kernels;
using LlmShrink.Model;
using LlmShrink.Representations;
using LlmShrink.Compression.Pruning;

namespace LlmShrink.Compression;

/// <summary>Receives each block's compressed layers as soon as the block is done (e.g. to write a checkpoint shard).</summary>
public interface IBlockSink
{
    void BlockDone(int layer, TransformerBlock block, IReadOnlyList<CompressedLayer> layers);

    /// <summary>Told before the first block when the recipe removes whole blocks (they get no <see cref="BlockDone"/>).</summary>
    void BlocksRemoved(IReadOnlyCollection<int> layers) { }

    /// <summary>Receives lm_head once compressed (only when the recipe targets it), with the final norm weight as the methods left it.</summary>
    void HeadDone(CompressedLayer head, float[] finalNorm) { }
}

/// <summary>Progress through the stages: blocks 0…NumLayers−1, then lm_head as stage NumLayers when the recipe targets it.</summary>
/// <param name="Done">How much of block <paramref name="Layer"/>'s work is behind the stage, in [0, 1), where the reporter knows it (the planner's measurement: groups done).</param>
public sealed record PipelineProgress(int Layer, int Layers, string Stage, double Done = 0);

/// <summary>
/// The outcome of a pipeline run: a report line per modifier and layer (a layer that several modifiers target has several),
/// the parameters and stored bits of the layers as finally written, and resource figures.
/// </summary>
/// <param name="Config">The model's configuration as compressed: block shapes after structured pruning, removed blocks left out.</param>
public sealed record PipelineResult(IReadOnlyList<LayerReport> Layers, long CompressedParameters, double CompressedBits, TimeSpan Elapsed, long PeakWorkingSetBytes,
    int CalibrationTokens, ModelConfig Config, IReadOnlyCollection<int> RemovedBlocks)
{
    /// <summary>Bits per weight of the changed linear layers as stored (scales, zeros and positions included); 32 when none changed.</summary>
    public double BitsPerWeight => CompressedParameters == 0 ? 32 : CompressedBits / CompressedParameters;
}

/// <summary>
/// Sequential layer-by-layer compression, as GPTQ and llm-compressor do it: the calibration tokens are embedded,
/// then for each block in turn (1) the block runs on its current inputs while the inputs of its linear layers
/// are recorded into statistics, (2) the recipe's modifiers compress the targeted layers from those statistics,
/// (3) the block runs again with the compressed layers, and its outputs become the next block's inputs. So each
/// block is calibrated on the activations the already-compressed blocks before it really produce, and only one
/// block's activations and statistics exist at a time. Weights stay memory-mapped; non-F32 layers are decoded
/// when their block runs. When the recipe targets lm_head, a head stage follows the last block (see <see cref="CompressHead"/>).
/// Before the first block, the methods that must see the whole float model first survey it (<see cref="ModelSurvey"/>).
/// </summary>
public sealed class SequentialPipeline
{
    /// <summary>Input rows kept per site for output-error searches and the report.</summary>
    public const int SampleTokens = 4096;

    private readonly LoadedModel _model;
    private readonly Transformer _transformer;
    private readonly Recipe _recipe;

    /// <param name="transformer">A transformer over <paramref name="model"/>; its blocks are compressed in place.</param>
    public SequentialPipeline(LoadedModel model, Transformer transformer, Recipe recipe)
    {
        _model = model;
        _transformer = transformer;
        _recipe = recipe;
        foreach (var m in recipe.Modifiers)
            if (m.Targets.Unmatched(model.Config.NumLayers).FirstOrDefault() is { } unmatched)
                throw new ShrinkException($"recipe '{recipe.Name}': modifier '{m.Spec.Method}': target '{unmatched}' matches no module of this model " +
                    $"(modules are named like {LinearRoles.ModulePath(0, LinearRole.Q)} and {LinearRoles.ModulePath(0, LinearRole.LmHead)})");
    }

    /// <param name="releaseFinishedBlocks">
    /// Drop each block's layers once its outputs are propagated (they are in the sink by then), so a large model is
    /// never held compressed and uncompressed at once; the transformer cannot run afterwards.
    /// </param>
    public PipelineResult Run(CalibrationSet calibration, IBlockSink? sink = null, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancel = default, bool releaseFinishedBlocks = false)
    {
        var clock = Stopwatch.StartNew();
        var c = _model.Config;
        var headPlan = HeadPlan();
        int stages = c.NumLayers + (headPlan.Count > 0 ? 1 : 0);
        int length = calibration.SequenceLength, d = c.HiddenSize;
        var hidden = new float[calibration.Samples.Length][];
        for (int s = 0; s < hidden.Length; s++)
        {
            hidden[s] = new float[length * d];
            _transformer.Embed(calibration.Samples[s], hidden[s]);
        }
        var scratch = new float[length * d];
        var removed = BlocksToRemove(hidden, scratch, progress, cancel);
        if (removed.Count > 0) sink?.BlocksRemoved(removed);
        Survey(calibration, hidden, removed, progress, cancel);
        ReleaseMapped(_model.Weights.Get(TensorNames.Embedding)); // only the sampled tokens' rows were read
        // The uncompressed model's hidden states, carried beside the compressed ones when a method reconstructs towards them
        // (after the survey, which re-embeds the hidden states it ran through the float blocks).
        var reference = _recipe.Modifiers.Any(m => m.Method.Needs.HasFlag(StatisticsNeeds.ReferenceOutputs))
            ? hidden.Select(h => (float[])h.Clone()).ToArray() : null;
        var reports = new List<LayerReport>();
        long writtenParameters = 0; // of the layers as finally written (counted, not kept: a block's layers are gigabytes)
        double writtenBits = 0;
        long peak = 0;

        for (int layer = 0; layer < c.NumLayers; layer++)
        {
            if (removed.Contains(layer)) // the residual stream passes the block by (the uncompressed model's runs it)
            {
                if (reference is not null) RunUncompressed(layer, reference, _transformer.NewCache(length), cancel);
                continue;
            }
            var block = _transformer.Blocks[layer];
            var plan = Plan(layer);
            var cache = _transformer.NewCache(length); // one block's keys and values, not every block's

            // (1) calibrate and (2) compress in a method of their own: the block's statistics and method state are
            // unreachable once it returns, whatever the JIT tier keeps alive in this loop's frame.
            var (layers, blockReports) = CalibrateAndCompress(layer, stages, plan, hidden, reference, scratch, cache, sink, progress, cancel);
            reports.AddRange(blockReports);
            writtenParameters += layers.Sum(l => (long)l.Rows * l.Columns);
            writtenBits += layers.Sum(l => l.StoredBits);
            peak = Math.Max(peak, CurrentWorkingSet());

            // (3) This block's outputs with its compressed layers feed the next block (a fresh cache: structured pruning may have changed its widths).
            progress?.Report(new PipelineProgress(layer, stages, "propagating"));
            cache = _transformer.NewCache(length);
            foreach (var h in hidden)
            {
                cancel.ThrowIfCancellationRequested();
                cache.Clear();
                _transformer.ForwardBlock(layer, h, length, cache);
            }
            if (releaseFinishedBlocks)
            {
                foreach (var role in LinearRoles.All) LinearRoles.Set(block, role, new ReleasedLinear(LinearRoles.Get(block, role)));
                // The block's checkpoint pages (~0.4 GB of F16 for llama-2-7b) would otherwise stay in the resident set.
                string prefix = TensorNames.Layer(layer, "");
                foreach (var tensor in _model.Weights.All.Where(t => t.Name.StartsWith(prefix, StringComparison.Ordinal))) ReleaseMapped(tensor);
                // A block leaves gigabytes of large arrays behind (decoded F32 weights, dense copies, codes, Hessians:
                // ~1.7 GB per llama-2-7b block). They live on the large/pinned object heaps, which only a gen-2
                // collection frees, and on a machine with free RAM the GC lets the heap grow by whole blocks first
                // (measured: 10 GB after 3 of 32 blocks). Collecting here keeps the peak at one block's working set.
                // Aggressive also returns the freed regions to the OS instead of keeping them committed for reuse.
                GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
            }
        }
        if (headPlan.Count > 0)
        {
            var (head, headReports) = CompressHead(headPlan, hidden, length, sink, progress, cancel);
            reports.AddRange(headReports);
            writtenParameters += (long)head.Rows * head.Columns;
            writtenBits += head.StoredBits;
            peak = Math.Max(peak, CurrentWorkingSet());
        }
        peak = Math.Max(peak, Process.GetCurrentProcess().PeakWorkingSet64);
        var kept = Enumerable.Range(0, c.NumLayers).Where(l => !removed.Contains(l)).ToList();
        bool reshaped = removed.Count > 0 || Enumerable.Range(0, c.NumLayers).Any(l => _transformer.Config.Layer(l) != c.Layer(l));
        var config = reshaped ? c.WithLayerShapes([.. kept.Select(_transformer.Config.Layer)]) : c;
        return new PipelineResult(reports, writtenParameters, writtenBits, clock.Elapsed, peak, calibration.TokenCount,
            config, removed);
    }

    private (IReadOnlyList<CompressedLayer> Layers, IReadOnlyList<LayerReport> Reports) CalibrateAndCompress(int layer, int stages, List<(Modifier Modifier, IReadOnlyList<LinearRole> Roles)> plan,
        float[][] hidden, float[][]? reference, float[] scratch, KvCache cache, IBlockSink? sink, IProgress<PipelineProgress>? progress, CancellationToken cancel)
    {
        var c = _model.Config;
        var block = _transformer.Blocks[layer];
        int length = scratch.Length / c.HiddenSize;
        // (1) Statistics of the targeted layers' real inputs.
        progress?.Report(new PipelineProgress(layer, stages, "calibrating"));
        var statistics = RecordStatistics(block, plan.Select(p => (p.Modifier.Method.Needs, p.Roles)));
        // Block-wise reconstruction also needs the uncompressed block's outputs: this pass computes them anyway.
        bool keepOutputs = plan.Any(p => p.Modifier.Method.Needs.HasFlag(StatisticsNeeds.BlockOutputs));
        bool reconstructs = keepOutputs || plan.Any(p => p.Modifier.Method.Needs.HasFlag(StatisticsNeeds.ReferenceOutputs));
        var outputs = new List<float[]>();
        foreach (var h in hidden)
        {
            cancel.ThrowIfCancellationRequested();
            h.CopyTo(scratch, 0);
            cache.Clear();
            _transformer.ForwardBlock(layer, scratch, length, cache);
            if (keepOutputs) outputs.Add((float[])scratch.Clone());
        }
        StopRecording(block);
        if (reference is not null) RunUncompressed(layer, reference, cache, cancel);

        // (2) Compress.
        progress?.Report(new PipelineProgress(layer, stages, "compressing"));
        var context = new BlockCompression(layer, _transformer.Config, block, _model.Weights, statistics, reshape: shape => _transformer.Reshape(layer, shape))
        {
            BlockInputs = reconstructs ? hidden : [],
            BlockOutputs = outputs,
            ReferenceOutputs = reference ?? [],
            Progress = done => progress?.Report(new PipelineProgress(layer, stages, "compressing", done)),
            Cancellation = cancel,
        };
        ApplyModifiers(context, plan, cancel);
        var (finished, blockReports) = context.Finish();
        // Each layer carries its site's mean x² (after any folding) so the writer can store the importance the GGUF re-fits weight by.
        var layers = finished.Select(l => statistics.TryGetValue(LinearRoles.Site(l.Role), out var site) ? l with { InputImportance = site.SquareMean() } : l).ToList();
        sink?.BlockDone(layer, block, layers);
        return (layers, blockReports);
    }

    /// <summary>Advances the uncompressed model's hidden states through block <paramref name="layer"/>, before anything in it is compressed.</summary>
    private void RunUncompressed(int layer, float[][] reference, KvCache cache, CancellationToken cancel)
    {
        foreach (var h in reference)
        {
            cancel.ThrowIfCancellationRequested();
            cache.Clear();
            _transformer.ForwardBlock(layer, h, h.Length / _model.Config.HiddenSize, cache);
        }
    }

    /// <summary>
    /// The blocks the recipe's drop-blocks modifiers remove. When one chooses by Block Influence, the calibration set
    /// first runs through every block of the uncompressed model (one extra pass, one block's cache at a time) and each
    /// block's BI is measured from its input and output hidden states.
    /// </summary>
    private IReadOnlySet<int> BlocksToRemove(float[][] hidden, float[] scratch, IProgress<PipelineProgress>? progress, CancellationToken cancel)
    {
        var droppers = _recipe.Modifiers.Where(m => m.Method is Methods.DropBlocksMethod).ToList();
        if (droppers.Count == 0) return new HashSet<int>();
        var c = _model.Config;
        int length = scratch.Length / c.HiddenSize;
        double[]? influence = null;
        if (droppers.Any(m => ((Methods.DropBlocksMethod)m.Method).NeedsInfluence))
        {
            var bi = new BlockInfluence(c.NumLayers);
            var input = new float[scratch.Length];
            var cache = _transformer.NewCache(length);
            foreach (var h in hidden)
            {
                h.CopyTo(scratch, 0);
                for (int layer = 0; layer < c.NumLayers; layer++)
                {
                    cancel.ThrowIfCancellationRequested();
                    progress?.Report(new PipelineProgress(layer, c.NumLayers, "measuring block influence"));
                    scratch.CopyTo(input, 0);
                    cache.Clear();
                    _transformer.ForwardBlock(layer, scratch, length, cache);
                    bi.Add(layer, input, scratch, length);
                }
            }
            influence = bi.Scores();
        }
        var removed = new HashSet<int>();
        foreach (var modifier in droppers)
        {
            var candidates = Enumerable.Range(0, c.NumLayers).Where(l => !removed.Contains(l) && LinearRoles.All.Any(r => modifier.Targets.Matches(l, r))).ToList();
            removed.UnionWith(((Methods.DropBlocksMethod)modifier.Method).Choose(c.NumLayers - removed.Count, candidates, influence));
        }
        return removed;
    }

    /// <summary>The whole-model look of each modifier that needs one (<see cref="ICompressionMethod.Survey"/>), in recipe order, on the float model.</summary>
    private void Survey(CalibrationSet calibration, float[][] hidden, IReadOnlySet<int> removed, IProgress<PipelineProgress>? progress, CancellationToken cancel)
    {
        ModelSurvey? survey = null;
        foreach (var modifier in _recipe.Modifiers.Where(m => m.Method.SurveysModel))
        {
            survey ??= new ModelSurvey(_model, _transformer, calibration, hidden, removed, progress, cancel);
            survey.Targets = modifier.Targets;
            modifier.Method.Survey(survey);
        }
    }

    /// <summary>
    /// Each modifier's targets in this block, in recipe order. A layer may be targeted by several modifiers: they stack
    /// (e.g. smoothquant then gptq, sparsegpt then gptq), each starting from the weights the previous one left.
    /// </summary>
    private List<(Modifier Modifier, IReadOnlyList<LinearRole> Roles)> Plan(int layer) =>
        _recipe.Modifiers.Select(m => (m, (IReadOnlyList<LinearRole>)LinearRoles.All.Where(r => m.Targets.Matches(layer, r)).ToList()))
            .Where(p => p.Item2.Count > 0).ToList();

    /// <summary>The modifiers targeting lm_head, in recipe order (shaped like a block's plan).</summary>
    private List<(Modifier Modifier, IReadOnlyList<LinearRole> Roles)> HeadPlan() =>
        _recipe.Modifiers.Where(m => m.Targets.Matches(_model.Config.NumLayers, LinearRole.LmHead))
            .Select(m => (m, (IReadOnlyList<LinearRole>)[LinearRole.LmHead])).ToList();

    /// <summary>
    /// The head stage: lm_head's inputs are the final RMSNorm of the last block's outputs (the calibration hidden states
    /// once every block ran compressed). Their statistics are gathered straight from those rows — lm_head itself never
    /// runs on them, which would cost a vocabulary-wide output per token — and the modifier compresses lm_head through
    /// the same context as a block's layers, folding any input scale into the final norm weight. The dense weight is
    /// decoded once (the context's <see cref="BlockCompression.Weights"/>) and dropped with the context.
    /// </summary>
    private (CompressedLayer Head, IReadOnlyList<LayerReport> Reports) CompressHead(List<(Modifier Modifier, IReadOnlyList<LinearRole> Roles)> plan, float[][] hidden, int length,
        IBlockSink? sink, IProgress<PipelineProgress>? progress, CancellationToken cancel)
    {
        var c = _model.Config;
        progress?.Report(new PipelineProgress(c.NumLayers, c.NumLayers + 1, "calibrating"));
        var needs = plan.Aggregate(StatisticsNeeds.Samples, (n, p) => n | p.Modifier.Method.Needs);
        var site = new SiteStatistics(c.HiddenSize, needs, SampleTokens);
        var normed = new float[length * c.HiddenSize];
        foreach (var h in hidden)
        {
            cancel.ThrowIfCancellationRequested();
            RmsNorm.ApplyRows(h, _transformer.FinalNorm, normed, length, c.RmsNormEps);
            site.Add(normed, length);
        }

        progress?.Report(new PipelineProgress(c.NumLayers, c.NumLayers + 1, "compressing"));
        var statistics = new Dictionary<InputSite, SiteStatistics> { [InputSite.LmHeadInput] = site };
        var context = new BlockCompression(c.NumLayers, c, null, _model.Weights, statistics, _transformer);
        ApplyModifiers(context, plan, cancel);
        var (finished, reports) = context.Finish();
        var head = finished.Single() with { InputImportance = site.SquareMean() };
        sink?.HeadDone(head, _transformer.FinalNorm);
        return (head, reports);
    }

    /// <summary>Runs each modifier of the plan on its targets, in recipe order, telling it which of them a later modifier takes over.</summary>
    private static void ApplyModifiers(BlockCompression context, List<(Modifier Modifier, IReadOnlyList<LinearRole> Roles)> plan, CancellationToken cancel)
    {
        for (int i = 0; i < plan.Count; i++)
        {
            cancel.ThrowIfCancellationRequested();
            var (modifier, roles) = plan[i];
            context.Targets = roles;
            context.TargetedLater = plan.Skip(i + 1).SelectMany(p => p.Roles).ToHashSet();
            context.MethodName = modifier.Method.Name;
            modifier.Method.CompressBlock(context);
        }
    }

    /// <summary>
    /// Wraps the first layer reading each needed input site so its inputs are recorded on the way through: for each
    /// (needs, roles) pair, what a method targeting those roles reads.
    /// </summary>
    internal static Dictionary<InputSite, SiteStatistics> RecordStatistics(TransformerBlock block, IEnumerable<(StatisticsNeeds Needs, IReadOnlyList<LinearRole> Roles)> plan)
    {
        var needs = new Dictionary<InputSite, StatisticsNeeds>();
        foreach (var (need, roles) in plan)
            foreach (var role in roles)
            {
                var site = LinearRoles.Site(role);
                needs[site] = needs.GetValueOrDefault(site) | need;
            }
        var statistics = new Dictionary<InputSite, SiteStatistics>();
        foreach (var (site, need) in needs)
        {
            var role = FirstRole(site);
            var layer = LinearRoles.Get(block, role);
            // Samples are always kept: the report measures every compressed layer's output error on the first
            // ReportTokens of them; only methods that search on samples need more (MLP inputs: 45 KB per token on llama-2-7b).
            int sampleTokens = need.HasFlag(StatisticsNeeds.Samples) ? SampleTokens : BlockCompression.ReportTokens;
            var stats = new SiteStatistics(layer.InFeatures, need | StatisticsNeeds.Samples, sampleTokens);
            statistics[site] = stats;
            LinearRoles.Set(block, role, new RecordingLinear(layer, stats));
        }
        return statistics;
    }

    internal static void StopRecording(TransformerBlock block)
    {
        foreach (var role in LinearRoles.All)
            if (LinearRoles.Get(block, role) is RecordingLinear recording) LinearRoles.Set(block, role, recording.Inner);
    }

    private static LinearRole FirstRole(InputSite site) => site switch
    {
        InputSite.AttentionInput => LinearRole.Q,
        InputSite.AttentionOutput => LinearRole.O,
        InputSite.MlpInput => LinearRole.Gate,
        _ => LinearRole.Down,
    };

    /// <summary>Stands in for a layer whose weights were written out and dropped.</summary>
    private sealed class ReleasedLinear(Linear released) : Linear(released.InFeatures, released.OutFeatures)
    {
        public override void Apply(ReadOnlySpan<float> x, Span<float> y, int n, Kernels.WorkerPool pool, int threads) =>
            throw new InvalidOperationException("this block was released after compression; load the written checkpoint to run it");
    }

    private static void ReleaseMapped(Formats.StoredTensor tensor) => tensor.File.Release(tensor.Offset, tensor.ByteLength);

    private static long CurrentWorkingSet()
    {
        using var process = Process.GetCurrentProcess();
        return process.WorkingSet64;
    }
}
