using System.Text.RegularExpressions;
using LlmShrink.Model;
using LlmShrink.Plotting;
using ScottPlot;

namespace LlmShrink.Compression;

/// <summary>
/// layer-errors.png beside a compression's report.md: each block linear's relative output error ‖XWᵀ − XŴᵀ‖²/‖XWᵀ‖² by
/// depth, one line per layer type, on a log axis — where in the model the recipe hurts, at a glance. A module that several
/// methods compressed in turn shows the last method's error, against the weights that method started from.
/// </summary>
public static partial class LayerErrorChart
{
    public const string FileName = "layer-errors.png";
    private const int Width = 1200, Height = 650;

    [GeneratedRegex(@"^model\.layers\.(\d+)\.")]
    private static partial Regex BlockOf();

    /// <summary>Writes the chart, or nothing when no block linear has a finite, positive error (e.g. only blocks removed).</summary>
    public static bool Write(string path, IReadOnlyList<LayerReport> layers, int blocks)
    {
        var last = new Dictionary<string, LayerReport>(StringComparer.Ordinal);
        foreach (var l in layers) last[l.Module] = l;
        var series = LinearRoles.All.Select(role => (Role: role, Points: last.Values
                .Select(l => (Match: BlockOf().Match(l.Module), Report: l))
                .Where(p => p.Match.Success && p.Report.Module.EndsWith("." + LinearRoles.ModuleName(role), StringComparison.Ordinal)
                            && double.IsFinite(p.Report.RelativeOutputError) && p.Report.RelativeOutputError > 0)
                .Select(p => (Block: int.Parse(p.Match.Groups[1].Value), Error: p.Report.RelativeOutputError))
                .OrderBy(p => p.Block).ToArray()))
            .Where(s => s.Points.Length > 0).ToList();
        if (series.Count == 0) return false;

        var plot = new Plot();
        foreach (var (role, points) in series)
        {
            var line = plot.Add.ScatterLine(points.Select(p => (double)p.Block).ToArray(), points.Select(p => Math.Log10(p.Error)).ToArray(),
                Chart.SeriesColor(Array.IndexOf(LinearRoles.All, role)));
            line.LineWidth = 2;
            line.MarkerSize = 7;
            line.LegendText = LinearRoles.ModuleName(role);
        }
        double low = Math.Floor(series.Min(s => s.Points.Min(p => Math.Log10(p.Error))));
        double high = Math.Ceiling(series.Max(s => s.Points.Max(p => Math.Log10(p.Error))));
        if (high - low < 1) high = low + 1;
        plot.Axes.SetLimits(-0.5, blocks - 0.5, low, high);
        Chart.LogTicks(plot.Axes.Left, low, high);
        Chart.BlockTicks(plot, blocks);
        // The formula uses no superscript ᵀ: the chart font has no glyph for it.
        Chart.Style(plot, "Relative output error of each block linear on its calibration inputs", "block (depth)", "‖Y − Ŷ‖² / ‖Y‖², Y = the layer's output (log scale)");
        plot.ShowLegend(Alignment.UpperRight, Orientation.Horizontal);
        plot.Legend.FontSize = Chart.LegendSize;
        Chart.Save(path, target => plot.SavePng(target, Width, Height));
        return true;
    }
}
