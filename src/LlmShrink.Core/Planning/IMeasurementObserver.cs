using LlmShrink.Compression;
using LlmShrink.Model;

namespace LlmShrink.Planning;

/// <summary>
/// Reads what <see cref="SensitivityMeasurement"/> streams past, block by block, so that other analyses of the same
/// calibration pass (<c>llmshrink analyze</c>: spectra, activation outliers, block influence) need no pass of their own.
/// </summary>
public interface IMeasurementObserver
{
    /// <summary>What the observer reads of each site's inputs, gathered on top of what the candidates need.</summary>
    StatisticsNeeds Needs { get; }

    /// <summary>
    /// One calibration sequence's hidden states [tokens, hidden size] entering and leaving block <paramref name="layer"/> of
    /// the float model (the statistics pass).
    /// </summary>
    void BlockRan(int layer, ReadOnlySpan<float> input, ReadOnlySpan<float> output, int tokens);

    /// <summary>
    /// Block <paramref name="context"/>.Layer's statistics are complete, before any candidate is tried on it. Both are
    /// shared with the trials: read them, change nothing.
    /// </summary>
    void Calibrated(BlockCompression context, IReadOnlyDictionary<InputSite, SiteStatistics> statistics, CancellationToken cancel);
}
