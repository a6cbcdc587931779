using System.Diagnostics;
using LlmShrink.Compression;
using LlmShrink.Evaluation;
using LlmShrink.Kernels;
using LlmShrink.Model;
using LlmShrink.Representations;

namespace LlmShrink.Planning;

/// <summary>
/// Measures every candidate on every group, streaming block by block through the uncompressed model as the
/// compression pipeline does: for block l, the calibration samples' inputs give the statistics the candidates' methods
/// read; each candidate is tried on each group without being committed (<see cref="BlockCompression.Try(IReadOnlyList{ICompressionMethod}, IReadOnlyList{LinearRole})"/>)
/// and priced in the output format's exact bytes; its proxy is its relative output error. Then, for the candidates
/// that matter — the lower convex hull of (bytes, proxy) in the group, which is where a budgeted choice lands — the
/// end-to-end KL is measured on the held-back text with only that group swapped (EXL3's measurement): the held-back
/// hidden states entering block l are kept from the float model, so only blocks l…L−1 and the head run again. Only
/// one block's statistics and the held-back reference logits are held at a time. <see cref="MeasureEveryCandidate"/>
/// measures the KL of every candidate instead (<c>llmshrink analyze</c>), and an <see cref="Observer"/> reads the same
/// pass's statistics and block outputs. With a <see cref="Clock"/>, each trial's layers are also timed at one token, the
/// float model's generation speed measured first (<see cref="DecodeTiming"/>).
/// </summary>
public sealed class SensitivityMeasurement
{
    private readonly LoadedModel _model;
    private readonly Transformer _transformer;
    private readonly IReadOnlyList<LayerGroup> _groups;
    private readonly IReadOnlyList<Candidate> _candidates;
    private readonly IStorageCost _cost;
    private readonly int _anchors;

    /// <param name="anchors">Candidates per group whose end-to-end KL is measured (the rest are predicted from their proxy).</param>
    public SensitivityMeasurement(LoadedModel model, Transformer transformer, IReadOnlyList<LayerGroup> groups, IReadOnlyList<Candidate> candidates,
        IStorageCost cost, int anchors)
    {
        if (candidates.Count == 0) throw new ShrinkException("the candidate menu is empty");
        if (anchors < 1) throw new ShrinkException($"--anchors: must be at least 1, not {anchors}");
        _model = model;
        _transformer = transformer;
        _groups = groups;
        _candidates = candidates;
        _cost = cost;
        _anchors = anchors;
    }

    /// <summary>
    /// Measure the end-to-end KL of every candidate on every group, not only the hull anchors: a sensitivity map rather
    /// than a plan. Each candidate's trial then serves both its price and its KL, so every method runs once per group.
    /// </summary>
    public bool MeasureEveryCandidate { get; init; }

    /// <summary>Sees each block's calibration statistics and float outputs as the measurement streams past them.</summary>
    public IMeasurementObserver? Observer { get; init; }

    /// <summary>ΔKLs known before measuring, [group][candidate] (<see cref="AnalysisPrior"/>): taken as measured, so they need no anchor run.</summary>
    public double?[][]? Prior { get; init; }

    /// <summary>Times each group's layers, as stored and as each candidate builds them (null: nothing is timed).</summary>
    public IDecodeClock? Clock { get; init; }

    public MeasurementTable Measure(CalibrationSet calibration, int[][] heldBack, string key, IProgress<PipelineProgress>? progress = null, CancellationToken cancel = default)
    {
        var clock = Stopwatch.StartNew();
        var c = _model.Config;
        double? floatSpeed = null;
        if (Clock is not null)
        {
            progress?.Report(new PipelineProgress(0, c.NumLayers, "timing generation"));
            floatSpeed = Clock.TokensPerSecond(_transformer, cancel); // before any layer is swapped
        }
        var floatSeconds = new double[_groups.Count];
        var methods = _candidates.Select(candidate => candidate.Methods()).ToList();
        var needs = methods.SelectMany(m => m).Aggregate(Observer?.Needs ?? StatisticsNeeds.None, (n, m) => n | m.Needs);
        var hidden = Embed(calibration.Samples);
        var held = Embed(heldBack);
        var reference = ReferenceLogits(held, cancel);
        var entries = new CandidateMeasurement[_groups.Count][];

        for (int layer = 0; layer < c.NumLayers; layer++)
        {
            MeasureBlock(layer, methods, needs, floatSeconds, hidden, held, reference, entries, progress, cancel);
            // The block's statistics are garbage now (on the Llama-3.2-1B shape down_proj's H and SVD-LLM's L alone are
            // 1 GB), but only a gen-2 collection frees large arrays, and without one here they were still on the heap
            // while the next block gathered its own and computed its spectra: RSS reached 5.5 GB there (analyze, 16 × 256
            // tokens, all three methods), against a peak of 4.5 GiB over the whole run with this collection.
            GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true);
            progress?.Report(new PipelineProgress(layer, c.NumLayers, "propagating"));
            RunBlock(layer, held, observe: false, cancel);
        }
        foreach (int g in Enumerable.Range(0, _groups.Count).Where(g => _groups[g].Layer == c.NumLayers))
        {
            // lm_head: its inputs are the final norm of the last block's outputs; a swap re-runs only the head.
            progress?.Report(new PipelineProgress(c.NumLayers - 1, c.NumLayers, "trying candidates on lm_head"));
            var context = new BlockCompression(c.NumLayers, c, null, _model.Weights, HeadStatistics(hidden, needs), _transformer);
            if (Clock is not null) floatSeconds[g] = Time(_groups[g], new Dictionary<LinearRole, Linear>());
            entries[g] = [.. _candidates.Select((candidate, i) => Price(context, _groups[g], candidate, methods[i], floatSeconds[g], cancel).Measurement)];
            foreach (int i in Anchors(entries[g]))
                entries[g][i] = entries[g][i] with { MeasuredKl = SwappedHeadKl(context, methods[i], held, reference, cancel) };
        }
        long parameters = _groups.Sum(g => g.Roles.Sum(r => Parameters(g.Layer, r)));
        var decode = floatSpeed is { } speed ? new DecodeTiming(speed, floatSeconds) : null;
        return new MeasurementTable(key, [.. _groups.Select(g => g.Label)], [.. _candidates.Select(x => x.Name)], entries, parameters, clock.Elapsed.TotalSeconds,
            decode, MeasurementTable.CurrentVersion);
    }

    /// <summary>
    /// Block <paramref name="layer"/>'s statistics (recorded as its calibration samples advance through it), then every
    /// candidate on its groups. A method of its own so that the statistics are unreachable once it returns, whatever
    /// the JIT tier of the loop that calls it.
    /// </summary>
    private void MeasureBlock(int layer, List<IReadOnlyList<ICompressionMethod>> methods, StatisticsNeeds needs, double[] floatSeconds, float[][] hidden,
        float[][] held, float[][] reference, CandidateMeasurement[][] entries, IProgress<PipelineProgress>? progress, CancellationToken cancel)
    {
        var c = _model.Config;
        var block = _transformer.Blocks[layer];
        var groups = Enumerable.Range(0, _groups.Count).Where(g => _groups[g].Layer == layer).ToList();
        progress?.Report(new PipelineProgress(layer, c.NumLayers, "calibrating"));
        var statistics = SequentialPipeline.RecordStatistics(block, groups.Select(g => (needs, _groups[g].Roles)));
        RunBlock(layer, hidden, observe: true, cancel); // advances the calibration samples too: no trial is ever committed
        SequentialPipeline.StopRecording(block);
        var context = new BlockCompression(layer, c, block, _model.Weights, statistics);
        Observer?.Calibrated(context, statistics, cancel);

        for (int k = 0; k < groups.Count; k++)
        {
            int g = groups[k];
            double done = (double)k / groups.Count;
            if (Clock is not null) floatSeconds[g] = Time(_groups[g], new Dictionary<LinearRole, Linear>());
            progress?.Report(new PipelineProgress(layer, c.NumLayers, $"trying {_candidates.Count} candidates on {_groups[g].Name}", done));
            if (MeasureEveryCandidate)
            {
                entries[g] = [.. _candidates.Select((candidate, i) =>
                {
                    progress?.Report(new PipelineProgress(layer, c.NumLayers, $"trying {candidate.Name} on {_groups[g].Name}", done));
                    var (price, layers) = Price(context, _groups[g], candidate, methods[i], floatSeconds[g], cancel);
                    progress?.Report(new PipelineProgress(layer, c.NumLayers, $"measuring KL of {candidate.Name} on {_groups[g].Name}", done));
                    return price.MeasuredKl is null ? price with { MeasuredKl = SwappedKl(_groups[g], layers, held, reference, cancel) } : price;
                })];
                continue;
            }
            entries[g] = [.. _candidates.Select((candidate, i) => Price(context, _groups[g], candidate, methods[i], floatSeconds[g], cancel).Measurement)];
            for (int i = 0; i < _candidates.Count; i++)
                if (Prior?[g][i] is { } known && entries[g][i].MeasuredKl is null) entries[g][i] = entries[g][i] with { MeasuredKl = known };
            progress?.Report(new PipelineProgress(layer, c.NumLayers, $"measuring KL of {_groups[g].Name}", done));
            foreach (int i in Anchors(entries[g]))
                entries[g][i] = entries[g][i] with { MeasuredKl = SwappedKl(_groups[g], context.Try(methods[i], _groups[g].Roles).Layers, held, reference, cancel) };
        }
    }

    private long Parameters(int layer, LinearRole role)
    {
        var linear = Float(layer, role);
        return (long)linear.InFeatures * linear.OutFeatures;
    }

    /// <summary>The layer as stored (the transformer's, which the measurement only swaps within a KL run).</summary>
    private Linear Float(int layer, LinearRole role) => role == LinearRole.LmHead ? _transformer.LmHead : LinearRoles.Get(_transformer.Blocks[layer], role);

    /// <summary>Seconds per token of the group with <paramref name="built"/> standing in for its roles (the others as stored).</summary>
    private double Time(LayerGroup group, IReadOnlyDictionary<LinearRole, Linear> built) =>
        Clock!.LayerSeconds([.. group.Roles.Select(r => built.TryGetValue(r, out var linear) ? linear : Float(group.Layer, r))]);

    /// <summary>
    /// Bytes, proxy and (with a <see cref="Clock"/>) time of one candidate on one group, from a trial that commits
    /// nothing, and the trial's layers. "keep" takes the group's time as stored, <paramref name="floatSeconds"/>.
    /// </summary>
    private (CandidateMeasurement Measurement, IReadOnlyList<CompressedLayer> Layers) Price(BlockCompression context, LayerGroup group, Candidate candidate,
        IReadOnlyList<ICompressionMethod> methods, double floatSeconds, CancellationToken cancel)
    {
        cancel.ThrowIfCancellationRequested();
        double? timed = Clock is null ? null : floatSeconds;
        if (candidate.IsKeep) return (new CandidateMeasurement(group.Roles.Sum(r => _cost.KeptBytes(_model.Weights, group.Layer, r)), 0, 0, timed), []);
        var (layers, _) = context.Try(methods, group.Roles);
        long bytes = 0;
        double weightedError = 0, parameters = 0;
        var built = new Dictionary<LinearRole, Linear>();
        foreach (var role in group.Roles)
        {
            var layer = layers.FirstOrDefault(l => l.Role == role);
            if (layer is null) { bytes += _cost.KeptBytes(_model.Weights, group.Layer, role); continue; }
            bytes += _cost.Bytes(layer);
            double n = (double)layer.Rows * layer.Columns;
            built[role] = layer.Build();
            weightedError += n * context.RelativeOutputError(role, built[role]);
            parameters += n;
        }
        if (Clock is not null) timed = Time(group, built);
        return (new CandidateMeasurement(bytes, parameters > 0 ? weightedError / parameters : 0, null, timed), layers);
    }

    /// <summary>
    /// Up to <see cref="_anchors"/> candidates on the lower convex hull of (bytes, proxy), evenly spread along it: the
    /// choices a byte budget prices against each other. Keep is measured already (ΔKL 0).
    /// </summary>
    private IEnumerable<int> Anchors(CandidateMeasurement[] row)
    {
        var order = Enumerable.Range(0, row.Length).Where(i => row[i].MeasuredKl is null)
            .OrderBy(i => row[i].Bytes).ThenBy(i => row[i].Proxy).ToList();
        var hull = new List<int>();
        foreach (int i in order)
        {
            if (hull.Count > 0 && row[i].Proxy >= row[hull[^1]].Proxy) continue; // dominated by a cheaper candidate
            while (hull.Count >= 2 && !Convex(row[hull[^2]], row[hull[^1]], row[i])) hull.RemoveAt(hull.Count - 1);
            hull.Add(i);
        }
        if (hull.Count <= _anchors) return hull;
        if (_anchors == 1) return [hull[hull.Count / 2]];
        return Enumerable.Range(0, _anchors).Select(k => hull[(int)Math.Round(k * (hull.Count - 1.0) / (_anchors - 1))]).Distinct();
    }

    /// <summary>Whether b lies strictly below the segment from a to c (so it stays on the lower hull).</summary>
    private static bool Convex(CandidateMeasurement a, CandidateMeasurement b, CandidateMeasurement c) =>
        (b.Proxy - a.Proxy) * (c.Bytes - a.Bytes) < (c.Proxy - a.Proxy) * (b.Bytes - a.Bytes);

    /// <summary>Mean KL per held-back token with the group's layers replaced by a trial's <paramref name="layers"/>, the rest of the model float.</summary>
    private double SwappedKl(LayerGroup group, IReadOnlyList<CompressedLayer> layers, float[][] held, float[][] reference, CancellationToken cancel)
    {
        var block = _transformer.Blocks[group.Layer];
        var original = group.Roles.ToDictionary(r => r, r => LinearRoles.Get(block, r));
        try
        {
            foreach (var layer in layers) LinearRoles.Set(block, layer.Role, layer.Build());
            return MeanKl(group.Layer, held, reference, cancel);
        }
        finally
        {
            foreach (var (role, linear) in original) LinearRoles.Set(block, role, linear);
        }
    }

    private Dictionary<InputSite, SiteStatistics> HeadStatistics(float[][] hidden, StatisticsNeeds needs)
    {
        var c = _model.Config;
        var site = new SiteStatistics(c.HiddenSize, needs | StatisticsNeeds.Samples, SequentialPipeline.SampleTokens);
        foreach (var h in hidden)
        {
            int n = h.Length / c.HiddenSize;
            var normed = new float[h.Length];
            RmsNorm.ApplyRows(h, _transformer.FinalNorm, normed, n, c.RmsNormEps);
            site.Add(normed, n);
        }
        return new Dictionary<InputSite, SiteStatistics> { [InputSite.LmHeadInput] = site };
    }

    private double SwappedHeadKl(BlockCompression context, IReadOnlyList<ICompressionMethod> methods, float[][] held, float[][] reference, CancellationToken cancel)
    {
        var (layers, _) = context.Try(methods, [LinearRole.LmHead]);
        var original = _transformer.LmHead;
        try
        {
            _transformer.LmHead = layers.Single().Build();
            return MeanKl(_model.Config.NumLayers, held, reference, cancel);
        }
        finally { _transformer.LmHead = original; }
    }

    private float[][] Embed(int[][] sequences)
    {
        int d = _model.Config.HiddenSize;
        return [.. sequences.Select(s =>
        {
            var h = new float[s.Length * d];
            _transformer.Embed(s, h);
            return h;
        })];
    }

    /// <summary>
    /// Runs block <paramref name="layer"/> on every sequence in place, advancing it to the next block's input; with
    /// <paramref name="observe"/>, the observer sees each sequence's input and output. The calibration samples advance
    /// in the same pass that records their statistics: the block stays the float model's (trials are never committed),
    /// so running it again on them to advance, as the compression pipeline must, would compute the same outputs once more
    /// (a 4096-token pass per block for 16 × 256 calibration tokens).
    /// </summary>
    private void RunBlock(int layer, float[][] hidden, bool observe, CancellationToken cancel)
    {
        int d = _model.Config.HiddenSize;
        int longest = hidden.Max(h => h.Length);
        var cache = _transformer.NewCache(longest / d);
        var input = observe && Observer is not null ? new float[longest] : null; // one buffer for every sequence
        foreach (var h in hidden)
        {
            cancel.ThrowIfCancellationRequested();
            cache.Clear();
            if (input is not null) h.CopyTo(input, 0);
            _transformer.ForwardBlock(layer, h, h.Length / d, cache);
            if (input is not null) Observer!.BlockRan(layer, input.AsSpan(0, h.Length), h, h.Length / d);
        }
    }

    /// <summary>The float model's logits on the held-back windows, computed block by block like every swapped run.</summary>
    private float[][] ReferenceLogits(float[][] held, CancellationToken cancel) =>
        [.. held.Select(h => Logits(0, h, cancel))];

    /// <summary>Runs blocks <paramref name="first"/>… and the head on a copy of one sequence's hidden states.</summary>
    private float[] Logits(int first, float[] input, CancellationToken cancel)
    {
        var c = _model.Config;
        int n = input.Length / c.HiddenSize;
        var h = (float[])input.Clone();
        var cache = _transformer.NewCache(n);
        for (int layer = first; layer < c.NumLayers; layer++)
        {
            cancel.ThrowIfCancellationRequested();
            cache.Clear();
            _transformer.ForwardBlock(layer, h, n, cache);
        }
        var normed = new float[h.Length];
        RmsNorm.ApplyRows(h, _transformer.FinalNorm, normed, n, c.RmsNormEps);
        var logits = new float[n * c.VocabSize];
        _transformer.LmHead.Apply(normed, logits, n, WorkerPool.Shared, 0);
        return logits;
    }

    private double MeanKl(int first, float[][] held, float[][] reference, CancellationToken cancel)
    {
        int vocab = _model.Config.VocabSize;
        double sum = 0;
        long tokens = 0;
        for (int s = 0; s < held.Length; s++)
        {
            var logits = Logits(first, held[s], cancel);
            for (int t = 0; t < logits.Length / vocab; t++, tokens++)
                sum += KlDivergence.Compute(reference[s].AsSpan(t * vocab, vocab), logits.AsSpan(t * vocab, vocab));
        }
        return sum / tokens;
    }
}
