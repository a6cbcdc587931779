using System.Diagnostics;
using LlmShrink.Compression;
using LlmShrink.Compression.Methods;
using LlmShrink.Compression.Pruning;
using LlmShrink.Model;
using LlmShrink.Planning;

namespace LlmShrink.Analysis;

/// <summary>
/// What <c>analyze</c> reads off the sensitivity measurement's streaming pass, block by block: the block's float input
/// and output on each calibration sequence (block influence), and, once its statistics are complete, the raw and whitened
/// spectra of its seven linears (the whitening from the Hessian that pass gathered) and its sites' outlier channels.
/// </summary>
internal sealed class AnalysisObserver(ModelConfig config, int threads, IProgress<PipelineProgress>? progress) : IMeasurementObserver
{
    private readonly BlockInfluence _influence = new(config.NumLayers);
    private readonly Stopwatch _clock = new();

    /// <summary>Raw and whitened spectra (and the dampening the whitening took) by block and layer.</summary>
    public Dictionary<(int Layer, LinearRole Role), (Spectrum Raw, Spectrum Whitened, double Dampening)> Spectra { get; } = new();
    public List<SiteOutliers> Outliers { get; } = new();
    public double[] BlockInfluence => _influence.Scores();
    /// <summary>Time spent on spectra and outliers.</summary>
    public TimeSpan Elapsed => _clock.Elapsed;

    /// <summary>XXᵀ for the whitening; per-channel magnitudes are always gathered.</summary>
    public StatisticsNeeds Needs => StatisticsNeeds.Hessian;

    public void BlockRan(int layer, ReadOnlySpan<float> input, ReadOnlySpan<float> output, int tokens) => _influence.Add(layer, input, output, tokens);

    public void Calibrated(BlockCompression context, IReadOnlyDictionary<InputSite, SiteStatistics> statistics, CancellationToken cancel)
    {
        _clock.Start();
        int layer = context.Layer;
        for (int i = 0; i < LinearRoles.All.Length; i++)
        {
            cancel.ThrowIfCancellationRequested();
            var role = LinearRoles.All[i];
            progress?.Report(new PipelineProgress(layer, config.NumLayers, $"spectra of {LinearRoles.ModuleName(role)}"));
            var (rows, columns) = context.Shape(role);
            var w = context.Weights(role);
            var raw = SpectrumAnalysis.Raw(w, rows, columns, threads);
            var whitening = statistics[LinearRoles.Site(role)].Whitening(LowRankParameters.DefaultDampening);
            Spectra[(layer, role)] = (raw, SpectrumAnalysis.Whitened(w, rows, columns, whitening, threads), whitening.Dampening);
        }
        foreach (var (site, s) in statistics.OrderBy(kv => kv.Key)) Outliers.Add(ActivationOutliers.Of(layer, site, s));
        _clock.Stop();
    }
}
