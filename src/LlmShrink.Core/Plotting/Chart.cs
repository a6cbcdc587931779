using System.Globalization;
using System.Text.RegularExpressions;
using ScottPlot;
using ScottPlot.TickGenerators;

namespace LlmShrink.Plotting;

/// <summary>
/// What every report chart shares (compress, eval --plot, analyze, auto): saving a PNG with one-line errors, fonts that
/// read at 100 %, logarithmic axes, per-block ticks and the colour of each layer type. ScottPlot 5 has no log axis of
/// its own: log-scale quantities are plotted as log₁₀ and their ticks labelled with the values themselves.
/// </summary>
public static class Chart
{
    public const float TitleSize = 17, LabelSize = 15, TickSize = 13, LegendSize = 13;

    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>Runs <paramref name="save"/> (a ScottPlot SavePng) on <paramref name="path"/>, turning a missing native
    /// library or an I/O failure into one line naming the chart.</summary>
    public static void Save(string path, Action<string> save)
    {
        string file = Path.GetFileName(path);
        try { save(path); }
        // SkiaSharp loads its native library on first use; without it a type initializer fails with the cause inside,
        // whose message goes on with advice and every path probed: its first sentence says enough.
        catch (Exception e) when (e.GetBaseException() is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
        {
            throw new ShrinkException($"{file}: cannot draw the chart: SkiaSharp's native library did not load ({Regex.Split(e.GetBaseException().Message, @"\.\s")[0].Trim()})", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ShrinkException($"{file}: cannot write the chart: {e.Message}", e);
        }
    }

    /// <summary>Title, axis labels (with their units) and the shared font sizes.</summary>
    public static void Style(Plot plot, string title, string x, string y)
    {
        plot.Title(title);
        plot.XLabel(x);
        plot.YLabel(y);
        plot.Axes.Title.Label.FontSize = TitleSize;
        plot.Axes.Bottom.Label.FontSize = LabelSize;
        plot.Axes.Left.Label.FontSize = LabelSize;
        plot.Axes.Bottom.TickLabelStyle.FontSize = TickSize;
        plot.Axes.Left.TickLabelStyle.FontSize = TickSize;
    }

    /// <summary>
    /// An axis showing log₁₀ values from <paramref name="low"/> to <paramref name="high"/>, labelled with the values: at
    /// every decade, and at 2× and 5× too when the range spans at most two decades; minor ticks at the other integers.
    /// </summary>
    public static void LogTicks(IAxis axis, double low, double high)
    {
        var ticks = new NumericManual();
        double[] labelled = high - low <= 2 ? [1, 2, 5] : [1];
        for (int decade = (int)Math.Floor(low); decade <= (int)Math.Ceiling(high); decade++)
            for (int m = 1; m <= 9; m++)
            {
                double at = decade + Math.Log10(m);
                if (at < low - 1e-9 || at > high + 1e-9) continue;
                double value = m * Math.Pow(10, decade);
                if (labelled.Contains(m)) ticks.AddMajor(at, value >= 1e-2 && value < 1e4 ? value.ToString("0.##", Inv) : value.ToString("0E+0", Inv));
                else ticks.AddMinor(at);
            }
        axis.TickGenerator = ticks;
    }

    /// <summary>One tick per block when they fit, else every few.</summary>
    public static void BlockTicks(Plot plot, int blocks)
    {
        int step = Math.Max(1, (blocks + 15) / 16);
        var shown = Enumerable.Range(0, blocks).Where(b => b % step == 0).ToArray();
        plot.Axes.Bottom.TickGenerator = new NumericManual([.. shown.Select(b => (double)b)], [.. shown.Select(b => b.ToString(Inv))]);
    }

    /// <summary>The colour of the i-th series (layer type, method) in every chart.</summary>
    public static Color SeriesColor(int i) => new ScottPlot.Palettes.Category10().GetColor(i);

    public static LegendItem LineItem(string text, Color color, LinePattern pattern) =>
        new() { LabelText = text, LineColor = color, LineWidth = 3, LinePattern = pattern };
}
