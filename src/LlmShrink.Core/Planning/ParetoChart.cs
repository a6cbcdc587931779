using System.Globalization;
using System.Text.RegularExpressions;
using LlmShrink.Plotting;
using ScottPlot;
using ScottPlot.TickGenerators;

namespace LlmShrink.Planning;

/// <summary>
/// pareto.png beside plan.md: the predicted Pareto front (bits per planned weight against predicted KL), every uniform
/// candidate placed against it, and the chosen plan with its predicted and measured KL — the table's story at a glance.
/// </summary>
public static class ParetoChart
{
    public const int Width = 900, Height = 600;

    /// <summary>Uniform candidates dearer than this many times the plan's bits are left out: "keep" at 32 bits would squash the rest.</summary>
    private const double ShownBitsFactor = 2;

    private const float FontSize = 11;

    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static void Write(string path, AutoRequest request, AutoSummary summary, MultipleChoiceKnapsack knapsack) =>
        Chart.Save(path, target => Draw(request, summary, knapsack).SavePng(target, Width, Height));

    private static Plot Draw(AutoRequest request, AutoSummary summary, MultipleChoiceKnapsack knapsack)
    {
        var t = summary.Table;
        double Bits(long bytes) => bytes * 8.0 / t.Parameters;
        double right = ShownBitsFactor * summary.BitsPerWeight;
        var plot = new Plot();

        // KL is plotted as log10 and the ticks labelled with KL itself: ScottPlot 5 has no log axis of its own. A zero KL
        // ("keep" everywhere) has no place on it and is left out.
        var front = knapsack.Front.Where(p => p.Loss > 0).ToList();
        var line = plot.Add.ScatterLine(front.Select(p => Bits(p.Cost)).ToArray(), front.Select(p => Math.Log10(p.Loss)).ToArray());
        line.LineWidth = 2;
        line.LegendText = "Pareto front (predicted)";
        var curve = front.Where(p => Bits(p.Cost) <= right).Select(p => new Coordinates(Bits(p.Cost), Math.Log10(p.Loss))).ToList();

        var uniform = Enumerable.Range(0, t.Candidates.Count).Select(c => (Name: t.Candidates[c],
            Bytes: Enumerable.Range(0, summary.Groups.Count).Sum(g => t.Entries[g][c].Bytes),
            Loss: Enumerable.Range(0, summary.Groups.Count).Sum(g => t.PredictedKl(g)[c]))).ToList();
        var drawn = uniform.Where(u => Bits(u.Bytes) <= right && u.Loss > 0).ToList();
        var uniformColor = Colors.DimGray;
        foreach (var u in drawn) plot.Add.Marker(Bits(u.Bytes), Math.Log10(u.Loss), MarkerShape.OpenCircle, 8, uniformColor);
        var markers = drawn.Select(u => new Coordinates(Bits(u.Bytes), Math.Log10(u.Loss))).ToList();
        plot.Legend.ManualItems.Add(new LegendItem
        {
            LabelText = "uniform candidates: every group the same (predicted)",
            MarkerShape = MarkerShape.OpenCircle,
            MarkerSize = 8,
            MarkerLineColor = uniformColor,
            MarkerFillColor = Colors.Transparent,
        });

        var others = summary.Attempts.Where(a => a != summary.Chosen && a.MeasuredKl > 0).ToList();
        if (others.Count > 0)
        {
            var tried = plot.Add.ScatterPoints(others.Select(a => Bits(a.PlannedBytes)).ToArray(), others.Select(a => Math.Log10(a.MeasuredKl)).ToArray());
            tried.MarkerShape = MarkerShape.OpenDiamond;
            tried.MarkerSize = 12;
            tried.Color = Colors.DarkOrange;
            tried.LegendText = "other plans written (measured)";
            markers.AddRange(tried.Data.GetScatterPoints());
        }
        double x = summary.BitsPerWeight;
        if (summary.Chosen.Selection.Loss > 0)
        {
            var predicted = plot.Add.Marker(x, Math.Log10(summary.Chosen.Selection.Loss), MarkerShape.FilledCircle, 12, Colors.Crimson);
            predicted.LegendText = string.Create(Inv, $"chosen plan, predicted KL {summary.Chosen.Selection.Loss:0.00E+0}");
            markers.Add(predicted.Location);
        }
        if (summary.Chosen.MeasuredKl > 0)
        {
            var measured = plot.Add.Marker(x, Math.Log10(summary.Chosen.MeasuredKl), MarkerShape.FilledDiamond, 14, Colors.DarkGreen);
            measured.LegendText = string.Create(Inv, $"chosen plan, measured KL {summary.Chosen.MeasuredKl:0.00E+0}");
            markers.Add(measured.Location);
        }
        // What the chart leaves out, in the corner no plan reaches (dear and bad).
        int hidden = uniform.Count - drawn.Count;
        var notes = plot.Add.Annotation((hidden == 0 ? "" : string.Create(Inv,
            $"{hidden} uniform candidate{(hidden == 1 ? "" : "s")} above {right:0.##} bits/weight (2× the plan) or at zero KL not shown\n"))
            + "names that would overlap are left out; plan.md lists every candidate", Alignment.UpperRight);
        notes.LabelFontSize = FontSize;
        notes.LabelBackgroundColor = Colors.White;
        notes.LabelBorderColor = Colors.DimGray;
        notes.LabelShadowColor = Colors.Transparent;

        plot.Title(string.Create(Inv, $"Pareto front: budget {Budget(request)}, plan {x:F3} bits/weight"));
        plot.XLabel("bits per weight of the planned layers");
        plot.YLabel("KL on held-back text (log scale)");
        plot.Axes.Left.TickGenerator = new NumericAutomatic
        {
            MinorTickGenerator = new LogMinorTickGenerator(),
            IntegerTicksOnly = true,
            LabelFormatter = y => Math.Pow(10, y).ToString("0E+0", Inv),
        };
        // The front runs on to "keep" at 16 or 32 bits; the chart stops where the uniform candidates do. Whole decades
        // top and bottom, so the power-of-ten ticks always label at least two values.
        var shown = curve.Concat(markers).ToList();
        if (shown.Count > 0)
        {
            double bottom = Math.Floor(shown.Min(p => p.Y)), left = shown.Min(p => p.X);
            plot.Axes.SetLimits(left - 0.05 * (right - left), right + 0.05 * (right - left), bottom, Math.Max(Math.Ceiling(shown.Max(p => p.Y)), bottom + 1));
        }
        plot.ShowLegend(Alignment.LowerLeft); // below the front nothing lies: no plan is both cheaper and better
        Label(plot, drawn.OrderBy(u => u.Loss / Math.Max(knapsack.WithinCost(u.Bytes)!.Loss, double.Epsilon))
            .Select(u => (ShortName(u.Name), new Coordinates(Bits(u.Bytes), Math.Log10(u.Loss)))).ToList(), markers, notes, uniformColor);
        return plot;
    }

    /// <summary>
    /// Names the uniform markers in the given order (nearest the front first: those are the ones worth reading), each
    /// right, left, above or below its marker inside the axes, where it covers no marker, the legend, the notes or a
    /// name placed before; the rest stay unnamed.
    /// </summary>
    private static void Label(Plot plot, List<(string Text, Coordinates At)> labels, IEnumerable<Coordinates> markers, ScottPlot.Plottables.Annotation notes, Color color)
    {
        plot.RenderInMemory(Width, Height); // lays the axes, legend and notes out, so data coordinates map to pixels
        var area = plot.RenderManager.LastRender.DataRect;
        var legend = plot.Legend.LastRenderSize;
        var taken = markers.Select(m => new PixelRect(plot.GetPixel(m), 5)).ToList();
        taken.Add(notes.LabelLastRenderPixelRect);
        // The legend's margin is a few pixels; 20 covers it.
        taken.Add(new PixelRect(area.Left, area.Left + legend.Width + 20, area.Bottom, area.Bottom - legend.Height - 20));
        (Alignment Alignment, float X, float Y)[] places = [(Alignment.MiddleLeft, 7, 0), (Alignment.MiddleRight, -7, 0), (Alignment.LowerCenter, 0, -7), (Alignment.UpperCenter, 0, 7)];
        bool Free(PixelRect box) => box.Left >= area.Left && box.Right <= area.Right && box.Top >= area.Top && box.Bottom <= area.Bottom && !taken.Any(b => b.Left < box.Right && box.Left < b.Right && b.Top < box.Bottom && box.Top < b.Bottom);
        using var paint = Paint.NewDisposablePaint();
        foreach (var (text, at) in labels)
        {
            var size = new LabelStyle { Text = text, FontSize = FontSize }.Measure(paint);
            var pixel = plot.GetPixel(at);
            var free = places.Where(p => Free(size.Rect(p.Alignment).WithPan(pixel.X + p.X, pixel.Y + p.Y))).Take(1).ToList();
            if (free.Count == 0) continue;
            var (alignment, x, y) = free[0];
            taken.Add(size.Rect(alignment).WithPan(pixel.X + x, pixel.Y + y));
            var label = plot.Add.Text(text, at);
            label.LabelFontSize = FontSize;
            label.LabelFontColor = color;
            label.LabelAlignment = alignment;
            label.LabelOffsetX = x;
            label.LabelOffsetY = y;
        }
    }

    private static string Budget(AutoRequest r) =>
        r.TargetSize is { } size ? string.Create(Inv, $"{size:N0} bytes")
        : r.TargetBitsPerWeight is { } bpw ? string.Create(Inv, $"{bpw} bits/weight")
        : string.Create(Inv, $"KL ≤ {r.MaxKl}");

    /// <summary>"gptq bits=4 group_size=128 symmetric=false" → "gptq b4 g128 asym", "ggml type=Q4_K" → "ggml Q4_K", "ggml rounding=gptq type=Q4_K" → "ggml gptq Q4_K": other keys show their value.</summary>
    public static string ShortName(string candidate) =>
        Regex.Replace(candidate, @"(\w+)=(\S+)", m => (m.Groups[1].Value, m.Groups[2].Value) switch
        {
            ("bits", var v) => "b" + v,
            ("group_size", var v) => "g" + v,
            ("symmetric", var v) => v == "true" ? "sym" : "asym",
            (_, var v) => v,
        });
}
