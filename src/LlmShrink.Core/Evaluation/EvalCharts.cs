using LlmShrink.Plotting;
using ScottPlot;

namespace LlmShrink.Evaluation;

/// <summary>
/// eval --plot DIR: nll-by-position.png (mean NLL of the prediction at each window position: how much context helps,
/// and where a compressed model loses), and with a reference kl-histogram.png (how per-token KL is spread: a few
/// tokens far off, or all slightly).
/// </summary>
public static class EvalCharts
{
    public const string NllByPosition = "nll-by-position.png", KlHistogramFile = "kl-histogram.png";
    private const int Width = 1100, Height = 600;

    /// <summary>Writes the charts into <paramref name="folder"/> and returns their file names.</summary>
    public static IReadOnlyList<string> Write(string folder, WindowScorer scorer, string model)
    {
        Chart.Save(Path.Combine(folder, NllByPosition), target => DrawNll(scorer, model).SavePng(target, Width, Height));
        if (scorer.KlHistogram is not { } histogram) return [NllByPosition];
        Chart.Save(Path.Combine(folder, KlHistogramFile), target => DrawKl(histogram).SavePng(target, Width, Height));
        return [NllByPosition, KlHistogramFile];
    }

    /// <summary>Positions are noisy for a short text: a centred moving average over this many positions is drawn over them.</summary>
    private const int Smoothing = 15;

    private static Plot DrawNll(WindowScorer scorer, string model)
    {
        var mean = scorer.MeanNllByPosition();
        var positions = Enumerable.Range(0, mean.Length).Where(p => double.IsFinite(mean[p])).ToArray();
        // The prediction at position p has seen tokens 0 … p: p + 1 tokens of context.
        double[] x = [.. positions.Select(p => p + 1.0)], y = [.. positions.Select(p => mean[p])];
        var plot = new Plot();
        var raw = plot.Add.ScatterLine(x, y, Chart.SeriesColor(0).WithAlpha(0.35));
        raw.LineWidth = 1;
        raw.LegendText = "each position";
        var smooth = plot.Add.ScatterLine(x, MovingAverage(y, Smoothing), Chart.SeriesColor(0));
        smooth.LineWidth = 3;
        smooth.LegendText = $"moving average over {Smoothing} positions";
        plot.ShowLegend(Alignment.UpperRight);
        plot.Legend.FontSize = Chart.LegendSize;
        Chart.Style(plot, $"Mean NLL by position in the window ({scorer.Windows} windows): {Path.GetFileName(model.TrimEnd('/'))}",
            "tokens of context before the prediction", "mean negative log-likelihood (nats/token)");
        return plot;
    }

    private static double[] MovingAverage(double[] y, int width)
    {
        var result = new double[y.Length];
        for (int i = 0; i < y.Length; i++)
        {
            int from = Math.Max(0, i - width / 2), to = Math.Min(y.Length, i + width / 2 + 1);
            result[i] = y[from..to].Average();
        }
        return result;
    }

    /// <summary>Bars over log₁₀ KL, ten bins per decade; the share of tokens in each bin in percent.</summary>
    private static Plot DrawKl(KlHistogram histogram)
    {
        long total = histogram.Counts.Sum();
        var plot = new Plot();
        var bars = new List<Bar>();
        double width = 1.0 / KlHistogram.BinsPerDecade;
        for (int b = 0; b < histogram.Counts.Length; b++)
        {
            if (histogram.Counts[b] == 0) continue;
            double low = Math.Log10(KlHistogram.LowerEdge(b));
            bars.Add(new Bar { Position = low + width / 2, Value = 100.0 * histogram.Counts[b] / total, Size = width * 0.9, FillColor = Chart.SeriesColor(0) });
        }
        plot.Add.Bars(bars);
        double lowest = Math.Log10(KlHistogram.Lowest), highest = Math.Log10(KlHistogram.Highest);
        plot.Axes.SetLimitsX(lowest, highest);
        plot.Axes.SetLimitsY(0, bars.Count == 0 ? 1 : bars.Max(b => b.Value) * 1.1);
        Chart.LogTicks(plot.Axes.Bottom, lowest, highest);
        Chart.Style(plot, $"Per-token KL(reference ‖ model), {total:N0} tokens (the first bar holds every KL ≤ 1e-6)",
            "KL divergence (nats, log scale)", "share of scored tokens (%)");
        return plot;
    }
}
