using LlmShrink.Compression;
using LlmShrink.Model;

namespace LlmShrink.Analysis;

/// <summary>One input channel and its statistic.</summary>
/// <param name="Ratio">The channel's value over the median channel's (null when the median is 0).</param>
public sealed record OutlierChannel(int Channel, double Value, double? Ratio);

/// <summary>A per-channel statistic of a site's inputs summarized over its channels.</summary>
/// <param name="Ratio">max / median over channels: how far the largest channel stands out (null when the median is 0).</param>
/// <param name="Top">The largest channels, largest first.</param>
public sealed record ChannelStatistic(double Max, double Median, double? Ratio, IReadOnlyList<OutlierChannel> Top);

/// <summary>The activation outliers of one input site of one block.</summary>
/// <param name="ReadBy">The layers reading this input (q/k/v, o, gate/up, down).</param>
/// <param name="MaxAbs">Per channel max |x| over the calibration tokens: spikes, which set a per-tensor int8 scale.</param>
/// <param name="MeanAbs">Per channel mean |x|: channels that are large throughout, which AWQ and ASVD weight by.</param>
public sealed record SiteOutliers(int Layer, InputSite Site, IReadOnlyList<string> ReadBy, int Channels, long Tokens, ChannelStatistic MaxAbs, ChannelStatistic MeanAbs);

/// <summary>
/// Outlier channels of the activations reaching a site, from its calibration statistics: LLM activations concentrate
/// in a few channels whose magnitude is orders above the rest (Dettmers et al. 2022, LLM.int8(), §3; Xiao et al. 2023,
/// SmoothQuant, §3), which is what makes activation quantization hard and what SmoothQuant and AWQ rescale. The
/// measure is max/median over channels — the median channel stands for "typical", so the ratio does not move with the
/// overall scale of the site.
/// </summary>
public static class ActivationOutliers
{
    /// <summary>Channels listed per statistic.</summary>
    public const int TopChannels = 8;

    public static SiteOutliers Of(int layer, InputSite site, SiteStatistics statistics) =>
        new(layer, site, [.. Compression.BlockCompression.Readers(site).Select(LinearRoles.ModuleName)], statistics.Columns, statistics.Tokens,
            Summarize(statistics.AbsMax), Summarize(statistics.AbsMean()));

    public static ChannelStatistic Summarize(float[] values)
    {
        double median = AnalysisSummary.Median(values.Select(v => (double)v)), max = values.Max();
        double? Ratio(double v) => median > 0 ? v / median : null;
        var top = Enumerable.Range(0, values.Length).OrderByDescending(j => values[j]).ThenBy(j => j).Take(TopChannels)
            .Select(j => new OutlierChannel(j, values[j], Ratio(values[j]))).ToList();
        return new ChannelStatistic(max, median, Ratio(max), top);
    }
}
