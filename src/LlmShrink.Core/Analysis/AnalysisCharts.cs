using System.Globalization;
using LlmShrink.Model;
using ScottPlot;
using LlmShrink.Plotting;
using ScottPlot.TickGenerators;

namespace LlmShrink.Analysis;

/// <summary>
/// The PNG charts of report.md, drawn from analysis.json's numbers alone: singular value decay per layer type, effective
/// rank by depth, sensitivity per layer and method, activation outliers by depth and site, and block influence by depth.
/// Log-scale quantities are plotted as log₁₀ (<see cref="Chart.LogTicks"/>).
/// </summary>
public static class AnalysisCharts
{
    public const string Spectra = "spectra.png", EffectiveRanks = "effective-rank.png", Sensitivity = "sensitivity.png",
        Outliers = "outliers.png", Influence = "block-influence.png";

    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;
    private static readonly Color RawColor = Colors.SteelBlue, WhitenedColor = Colors.DarkOrange;

    /// <summary>The charts a document gets, in report order (no sensitivity chart without a measured method).</summary>
    public static IReadOnlyList<string> Files(AnalysisDocument d) =>
        d.Methods.Count > 0 ? [Sensitivity, Spectra, EffectiveRanks, Outliers, Influence] : [Spectra, EffectiveRanks, Outliers, Influence];

    /// <summary>Writes every chart of <see cref="Files"/> into <paramref name="folder"/>.</summary>
    public static void Write(string folder, AnalysisDocument d)
    {
        foreach (var file in Files(d))
        {
            string path = Path.Combine(folder, file);
            Chart.Save(path, target =>
            {
                switch (file)
                {
                    case Spectra: DrawSpectra(d).SavePng(target, 1800, 950); break;
                    case EffectiveRanks: DrawEffectiveRanks(d).SavePng(target, 1800, 950); break;
                    case Sensitivity: DrawSensitivity(d).SavePng(target, 1500, 60 + 330 * d.Methods.Count); break;
                    case Outliers: DrawOutliers(d).SavePng(target, 1600, 650); break;
                    default: DrawInfluence(d).SavePng(target, 1200, d.Methods.Count > 0 ? 850 : 450); break;
                }
            });
        }
    }

    /// <summary>One panel per layer type: σᵢ/σ₁ against i/min(m, n) for every block, raw and whitened, and the break-even rank.</summary>
    private static Multiplot DrawSpectra(AnalysisDocument d)
    {
        var types = AnalysisDocument.Types;
        int columns = types.Count / 2 + 1; // the cell after the last type holds the key
        var multiplot = Grid(2, columns, 2 * columns);
        for (int t = 0; t < types.Count; t++)
        {
            var plot = multiplot.GetPlot(t);
            var matrices = d.Matrices.Where(m => m.Type == types[t]).ToList();
            double bottom = 0;
            foreach (var m in matrices)
                foreach (var (spectrum, color) in new[] { (m.Raw, RawColor), (m.Whitened, WhitenedColor) })
                {
                    var (x, y) = Decay(spectrum.SingularValues);
                    if (y.Length == 0) continue;
                    var line = plot.Add.ScatterLine(x, y, color.WithAlpha(0.55));
                    line.LineWidth = 1.5f;
                    bottom = Math.Min(bottom, y.Min());
                }
            var first = matrices[0];
            double breakEven = first.BreakEvenRank / Math.Min(first.Rows, first.Columns);
            plot.Add.VerticalLine(breakEven, 2, Colors.Black, LinePattern.Dashed);
            bottom = Math.Max(Math.Floor(bottom), -8); // below 1e-8·σ₁ the Gram spectrum is rounding noise
            plot.Axes.SetLimits(0, 1, bottom, 0.1);
            Chart.LogTicks(plot.Axes.Left, bottom, 0);
            Chart.Style(plot, $"{types[t]}: W is {first.Rows} × {first.Columns}, {matrices.Count} blocks", "rank i / min(m, n)", "σᵢ / σ₁ (log scale)");
        }
        for (int free = types.Count; free < 2 * columns; free++)
            Key(multiplot.GetPlot(free), free > types.Count ? [] :
            [
                Chart.LineItem("raw W, one line per block", RawColor, LinePattern.Solid),
                Chart.LineItem("whitened W·L, LLᵀ = XXᵀ/N on calibration inputs", WhitenedColor, LinePattern.Solid),
                Chart.LineItem("break-even rank mn/(m+n): low rank pays left of it", Colors.Black, LinePattern.Dashed),
            ], Orientation.Vertical);
        return multiplot;
    }

    /// <summary>Normalized ranks (i + 1)/k and log₁₀(σᵢ/σ₁), zero singular values left out (no place on a log axis).</summary>
    private static (double[] X, double[] Y) Decay(double[] sigma)
    {
        if (sigma.Length == 0 || sigma[0] <= 0) return ([], []);
        var kept = Enumerable.Range(0, sigma.Length).Where(i => sigma[i] > 0).ToArray();
        return ([.. kept.Select(i => (i + 1.0) / sigma.Length)], [.. kept.Select(i => Math.Log10(sigma[i] / sigma[0]))]);
    }

    /// <summary>Rows raw / whitened, columns 90 / 95 / 99 % of the energy: r_p over the break-even rank by depth, a line per layer type.</summary>
    private static Multiplot DrawEffectiveRanks(AnalysisDocument d)
    {
        var levels = SpectrumAnalysis.EnergyLevels;
        var (multiplot, key) = UnderKey(2, levels.Length);
        double top = d.Matrices.SelectMany(m => m.Raw.EffectiveRanks.Concat(m.Whitened.EffectiveRanks)).Max(r => r.OfBreakEven);
        for (int row = 0; row < 2; row++)
            for (int col = 0; col < levels.Length; col++)
            {
                var plot = multiplot.GetPlot(row * levels.Length + col);
                double p = levels[col];
                for (int t = 0; t < AnalysisDocument.Types.Count; t++)
                {
                    var matrices = d.Matrices.Where(m => m.Type == AnalysisDocument.Types[t]).OrderBy(m => m.Layer).ToList();
                    var line = plot.Add.ScatterLine(matrices.Select(m => (double)m.Layer).ToArray(),
                        matrices.Select(m => (row == 0 ? m.Raw : m.Whitened).EffectiveRanks.Single(r => r.Energy == p).OfBreakEven).ToArray(), Chart.SeriesColor(t));
                    line.LineWidth = 2;
                    line.MarkerSize = 6;
                }
                plot.Add.HorizontalLine(1, 2, Colors.Black, LinePattern.Dashed);
                plot.Axes.SetLimits(-0.3, d.Model.Layers - 0.7, 0, Math.Max(top, 1) * 1.05);
                Chart.BlockTicks(plot, d.Model.Layers);
                string what = row == 0 ? "raw W: rank holding" : "whitened W·L: rank holding";
                Chart.Style(plot, string.Create(Inv, $"{what} {p * 100:0} % of the energy"), "block", "rank / break-even rank mn/(m+n)");
            }
        Key(key, [.. AnalysisDocument.Types.Select((t, i) => Chart.LineItem(t, Chart.SeriesColor(i), LinePattern.Solid)),
            Chart.LineItem("break-even: low rank pays below", Colors.Black, LinePattern.Dashed)], Orientation.Horizontal);
        return multiplot;
    }

    /// <summary>One heatmap per method: layer type × block, colored by log₁₀ KL on one scale shared by every method.</summary>
    private static Multiplot DrawSensitivity(AnalysisDocument d)
    {
        var types = AnalysisDocument.Types.ToList();
        int blocks = d.Model.Layers;
        var all = d.Matrices.SelectMany(m => m.Sensitivity.Values.Select(s => s.Kl)).Where(kl => kl > 0).ToList();
        var range = all.Count == 0 ? new ScottPlot.Range(-6, -1) : new ScottPlot.Range(Math.Floor(Math.Log10(all.Min())), Math.Ceiling(Math.Log10(all.Max())));
        var multiplot = new Multiplot();
        multiplot.AddPlots(d.Methods.Count);
        multiplot.Layout = new ScottPlot.MultiplotLayouts.Rows();
        for (int k = 0; k < d.Methods.Count; k++)
        {
            var method = d.Methods[k];
            var plot = multiplot.GetPlot(k);
            // Row 0 of the intensities is drawn at the top: q_proj first, as in a block.
            var cells = new double[types.Count, blocks];
            foreach (var m in d.Matrices)
            {
                double kl = m.Sensitivity[method.Id].Kl;
                cells[types.IndexOf(m.Type), m.Layer] = kl > 0 ? Math.Log10(kl) : double.NaN;
            }
            var heatmap = plot.Add.Heatmap(cells);
            heatmap.Colormap = new ScottPlot.Colormaps.Viridis();
            heatmap.ManualRange = range;
            heatmap.Rectangle = new CoordinateRect(-0.5, blocks - 0.5, -0.5, types.Count - 0.5);
            heatmap.NaNCellColor = Colors.LightGray;
            if (blocks <= 40)
                foreach (var m in d.Matrices)
                {
                    double kl = m.Sensitivity[method.Id].Kl;
                    var text = plot.Add.Text(kl.ToString("0.0E+0", Inv), m.Layer, types.Count - 1 - types.IndexOf(m.Type));
                    text.Alignment = Alignment.MiddleCenter;
                    text.LabelFontSize = blocks <= 16 ? 12 : 9;
                    // Viridis is dark at its low end: light text there, dark text on the bright high end.
                    text.LabelFontColor = kl > 0 && (Math.Log10(kl) - range.Min) / (range.Max - range.Min) > 0.6 ? Colors.Black : Colors.White;
                }
            var bar = plot.Add.ColorBar(heatmap, Edge.Right);
            bar.Label = "KL (nats/token, log scale)";
            Chart.LogTicks(bar.Axis, range.Min, range.Max);
            bar.LabelStyle.FontSize = Chart.LabelSize;
            bar.Axis.TickLabelStyle.FontSize = Chart.TickSize;
            plot.Axes.SetLimits(-0.5, blocks - 0.5, -0.5, types.Count - 0.5);
            Chart.BlockTicks(plot, blocks);
            plot.Axes.Left.TickGenerator = new NumericManual([.. Enumerable.Range(0, types.Count).Select(i => (double)(types.Count - 1 - i))], [.. types]);
            Chart.Style(plot, $"{method.Description}: KL to the original with only that layer compressed", k == d.Methods.Count - 1 ? "block" : "", "");
        }
        return multiplot;
    }

    /// <summary>max/median of max |x| and of mean |x| over channels, by depth, a line per input site.</summary>
    private static Multiplot DrawOutliers(AnalysisDocument d)
    {
        var (multiplot, key) = UnderKey(1, 2);
        var sites = d.Sites.Select(s => s.Site).Distinct().Order().ToList();
        string Readers(int i) => $"input of {string.Join("/", d.Sites.First(s => s.Site == sites[i]).ReadBy)}";
        for (int panel = 0; panel < 2; panel++)
        {
            var plot = multiplot.GetPlot(panel);
            double low = 0, high = 1;
            for (int i = 0; i < sites.Count; i++)
            {
                var points = d.Sites.Where(s => s.Site == sites[i]).OrderBy(s => s.Layer)
                    .Select(s => (s.Layer, Ratio: panel == 0 ? s.MaxAbs.Ratio : s.MeanAbs.Ratio)).Where(p => p.Ratio > 0).ToList();
                if (points.Count == 0) continue;
                var y = points.Select(p => Math.Log10(p.Ratio!.Value)).ToArray();
                var line = plot.Add.ScatterLine(points.Select(p => (double)p.Layer).ToArray(), y, Chart.SeriesColor(i));
                line.LineWidth = 2;
                line.MarkerSize = 7;
                (low, high) = (Math.Min(low, y.Min()), Math.Max(high, y.Max()));
            }
            plot.Axes.SetLimits(-0.3, d.Model.Layers - 0.7, Math.Floor(low), Math.Ceiling(high));
            Chart.BlockTicks(plot, d.Model.Layers);
            Chart.LogTicks(plot.Axes.Left, Math.Floor(low), Math.Ceiling(high));
            Chart.Style(plot, panel == 0 ? "Spikes: largest channel's max |x| over the median channel's" : "Persistent: largest channel's mean |x| over the median channel's",
                "block", "ratio to the median channel (log scale)");
        }
        Key(key, [.. sites.Select((_, i) => Chart.LineItem(Readers(i), Chart.SeriesColor(i), LinePattern.Solid))], Orientation.Horizontal);
        return multiplot;
    }

    /// <summary>Block influence by depth, and under it the measured sensitivity index for comparison.</summary>
    private static Multiplot DrawInfluence(AnalysisDocument d)
    {
        bool measured = d.Methods.Count > 0;
        var multiplot = new Multiplot();
        multiplot.AddPlots(measured ? 2 : 1);
        multiplot.Layout = new ScottPlot.MultiplotLayouts.Rows();
        var top = multiplot.GetPlot(0);
        var bars = top.Add.Bars(d.Blocks.Select(b => (double)b.Layer), d.Blocks.Select(b => b.BlockInfluence));
        bars.Color = Colors.SteelBlue;
        top.Axes.Margins(bottom: 0);
        Chart.BlockTicks(top, d.Model.Layers);
        Chart.Style(top, "Block influence (ShortGPT): how much each block turns the hidden state", measured ? "" : "block", "BI = 1 − mean cos(x_in, x_out)");
        if (measured)
        {
            var bottom = multiplot.GetPlot(1);
            var index = bottom.Add.Bars(d.Blocks.Select(b => (double)b.Layer), d.Blocks.Select(b => b.SensitivityIndex));
            index.Color = Colors.DarkOrange;
            bottom.Add.HorizontalLine(1, 2, Colors.Black, LinePattern.Dashed);
            bottom.Axes.Margins(bottom: 0);
            Chart.BlockTicks(bottom, d.Model.Layers);
            Chart.Style(bottom, "Measured sensitivity: block's summed KL / average block's (geometric mean over methods)", "block", "sensitivity index (1 = average)");
        }
        return multiplot;
    }

    private static Multiplot Grid(int rows, int columns, int plots)
    {
        var multiplot = new Multiplot();
        multiplot.AddPlots(plots);
        multiplot.Layout = new ScottPlot.MultiplotLayouts.Grid(rows, columns);
        return multiplot;
    }

    /// <summary>
    /// A grid of <paramref name="rows"/> × <paramref name="columns"/> panels under a strip as wide as the figure that holds
    /// their shared key (one key instead of one per panel over the data).
    /// </summary>
    private static (Multiplot Multiplot, Plot Key) UnderKey(int rows, int columns)
    {
        const int PanelShare = 8; // each panel row is this many times as tall as the key strip
        int gridRows = 1 + rows * PanelShare;
        var multiplot = new Multiplot();
        multiplot.AddPlots(1 + rows * columns);
        var layout = new ScottPlot.MultiplotLayouts.CustomGrid();
        layout.Set(multiplot.GetPlot(0), new GridCell(0, 0, gridRows, columns, 1, columns));
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
                layout.Set(multiplot.GetPlot(1 + r * columns + c), new GridCell(1 + r * PanelShare, c, gridRows, columns, PanelShare, 1));
        multiplot.Layout = layout;
        // Panels are numbered from 0 for the callers: the key is moved to the end.
        var key = multiplot.GetPlot(0);
        multiplot.RemovePlot(key);
        multiplot.AddPlot(key);
        return (multiplot, key);
    }

    /// <summary>Turns <paramref name="plot"/> into a key: no axes, only the legend of <paramref name="items"/>, centered.</summary>
    private static void Key(Plot plot, IReadOnlyList<LegendItem> items, Orientation orientation)
    {
        plot.Layout.Frameless();
        plot.Axes.Frameless();
        plot.HideGrid();
        if (items.Count == 0) return;
        plot.Legend.ManualItems.AddRange(items);
        plot.ShowLegend(Alignment.MiddleCenter, orientation);
        plot.Legend.FontSize = Chart.LegendSize;
        plot.Legend.TightHorizontalWrapping = true; // one row of items at their own widths, not a column grid
    }

}
