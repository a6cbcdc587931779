using LlmShrink.Compression.Recipes;
using LlmShrink.Model;
using LlmShrink.Training;

namespace LlmShrink.Compression;

/// <summary>
/// The whole uncompressed model, for a method that must look at all of it before the sequential pipeline changes any
/// block (<see cref="ICompressionMethod.Survey"/>): fwsvd needs the Fisher information of every linear, which the loss
/// gradient of the whole model gives; svd-llm's loss allocation compares the truncation losses of one layer type across
/// depths before it compresses the first. Two looks are offered:
/// <list type="bullet">
/// <item><see cref="Fisher"/>: the per-row Fisher information from the training engine's forward and backward pass over
/// the calibration sequences, computed once per run however many modifiers ask. It holds the model in float32 with a
/// gradient beside every parameter (8 bytes per parameter), which bounds the model sizes it serves.</item>
/// <item><see cref="ForEachBlock"/>: the calibration sequences through the float blocks one at a time, each block's input
/// statistics for the modifier's targets handed to a visitor, as the pipeline gathers them but on the float model's
/// activations. It runs on the pipeline's own hidden states and re-embeds them afterwards (cheaper than a copy).</item>
/// </list>
/// </summary>
public sealed class ModelSurvey
{
    private readonly LoadedModel _model;
    private readonly Transformer _transformer;
    private readonly float[][] _hidden;
    private readonly IReadOnlySet<int> _removed;
    private readonly IProgress<PipelineProgress>? _progress;
    private readonly CancellationToken _cancel;
    private readonly Dictionary<FisherSample, FisherInformation> _fisher = new();

    internal ModelSurvey(LoadedModel model, Transformer transformer, CalibrationSet calibration, float[][] hidden, IReadOnlySet<int> removed,
        IProgress<PipelineProgress>? progress, CancellationToken cancel)
    {
        _model = model;
        _transformer = transformer;
        Calibration = calibration;
        _hidden = hidden;
        _removed = removed;
        _progress = progress;
        _cancel = cancel;
    }

    public ModelConfig Config => _model.Config;
    public CalibrationSet Calibration { get; }
    /// <summary>The targets of the modifier being surveyed for.</summary>
    internal TargetSelector Targets { get; set; } = null!;

    /// <summary>The per-row Fisher information of every linear weight of the float model on the calibration sequences.</summary>
    public FisherInformation Fisher(FisherSample sample)
    {
        if (_fisher.TryGetValue(sample, out var known)) return known;
        var trainable = TrainableModel.FromLoaded(_model);
        int samples = Calibration.Samples.Length;
        var progress = new Progress(done => _progress?.Report(new PipelineProgress(0, Config.NumLayers, "Fisher information", (double)done / samples)));
        return _fisher[sample] = FisherInformation.Measure(trainable, Calibration, sample, progress, _cancel);
    }

    /// <summary>
    /// Runs the calibration sequences through every kept block of the float model, recording <paramref name="needs"/> at
    /// the inputs of the modifier's targets, and calls <paramref name="visit"/> with each block that has targets (its
    /// <see cref="BlockCompression.Targets"/>, shapes, weights and statistics; nothing it does is committed).
    /// </summary>
    public void ForEachBlock(StatisticsNeeds needs, Action<BlockCompression> visit)
    {
        var c = Config;
        int length = Calibration.SequenceLength;
        var cache = _transformer.NewCache(length);
        for (int layer = 0; layer < c.NumLayers; layer++)
        {
            if (_removed.Contains(layer)) continue;
            _cancel.ThrowIfCancellationRequested();
            _progress?.Report(new PipelineProgress(layer, c.NumLayers, "surveying"));
            var block = _transformer.Blocks[layer];
            var roles = LinearRoles.All.Where(r => Targets.Matches(layer, r)).ToList();
            var statistics = roles.Count > 0 ? SequentialPipeline.RecordStatistics(block, [(needs, roles)]) : null;
            foreach (var h in _hidden)
            {
                _cancel.ThrowIfCancellationRequested();
                cache.Clear();
                _transformer.ForwardBlock(layer, h, length, cache);
            }
            if (statistics is null) continue;
            SequentialPipeline.StopRecording(block);
            visit(new BlockCompression(layer, c, block, _model.Weights, statistics) { Targets = roles });
        }
        for (int s = 0; s < _hidden.Length; s++) _transformer.Embed(Calibration.Samples[s], _hidden[s]);
    }

    /// <summary>Reports on the calling thread (<see cref="Progress{T}"/> would post to the thread pool).</summary>
    private sealed class Progress(Action<int> report) : IProgress<int>
    {
        public void Report(int value) => report(value);
    }
}
