using System.Globalization;

namespace LlmShrink.Analysis;

/// <summary>
/// The plain-language summary of an analysis: which layer types and depths compress cheaply, computed from the document's
/// numbers only (every sentence states the figures it rests on; none is written in advance).
/// </summary>
public static class AnalysisSummary
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static IReadOnlyList<string> Sentences(AnalysisDocument d)
    {
        var s = new List<string>();
        foreach (var method in d.Methods) s.Add(ByType(d, method));
        if (d.Methods.Count > 0)
        {
            s.Add(ByDepth(d));
            s.Add(Methods(d));
            if (Cheap(d) is { } cheap) s.Add(cheap);
        }
        s.Add(LowRank(d));
        s.Add(Outliers(d));
        s.Add(Influence(d));
        return s;
    }

    private static string Kl(double kl) => kl.ToString("0.00E+0", Inv);
    private static string Percent(double x) => (100 * x).ToString("0", Inv) + " %";
    private static string Times(double x) => x.ToString(x < 10 ? "0.0" : "0", Inv) + "×";

    /// <summary>Mean KL per layer type over the blocks, for one method.</summary>
    private static List<(string Type, double Mean)> MeanByType(AnalysisDocument d, string method) =>
        [.. AnalysisDocument.Types.Select(t => (t, d.Matrices.Where(m => m.Type == t).Average(m => m.Sensitivity[method].Kl)))];

    /// <summary>"3-bit RTN: down_proj is the most sensitive layer type (mean KL …), k_proj the least (…)."</summary>
    private static string ByType(AnalysisDocument d, SensitivityMethod method)
    {
        var byType = MeanByType(d, method.Id).OrderByDescending(x => x.Mean).ToList();
        var (most, least) = (byType[0], byType[^1]);
        return string.Create(Inv, $"{Capital(method.Label)}: {most.Type} is the most sensitive layer type (mean KL {Kl(most.Mean)} over {d.Model.Layers} blocks), " +
            $"{least.Type} the least ({Kl(least.Mean)}); {(least.Mean > 0 ? Times(most.Mean / least.Mean) + " apart" : "the least costs nothing measurable")}.");
    }

    /// <summary>The most and least sensitive blocks by the combined index.</summary>
    private static string ByDepth(AnalysisDocument d)
    {
        var order = d.Blocks.OrderByDescending(b => b.SensitivityIndex).ToList();
        int shown = Math.Max(1, Math.Min(2, d.Blocks.Count / 4));
        string Blocks(IEnumerable<BlockAnalysis> bs) => Join(bs.Select(b => string.Create(Inv, $"{b.Layer} ({Times(b.SensitivityIndex)})")));
        return $"By depth, the most sensitive block{(shown > 1 ? "s are" : " is")} {Blocks(order.Take(shown))} and the least {Blocks(order.TakeLast(shown).Reverse())} " +
            "(a block's summed KL over its layers against the average block, geometric mean over the methods).";
    }

    /// <summary>Which method hurts each layer most, and the median layer's KL per method.</summary>
    private static string Methods(AnalysisDocument d)
    {
        var worst = d.Matrices.GroupBy(m => d.Methods.MaxBy(x => m.Sensitivity[x.Id].Kl)!).ToDictionary(g => g.Key.Id, g => g.Count());
        var medians = d.Methods.Select(x => $"{Kl(Median(d.Matrices.Select(m => m.Sensitivity[x.Id].Kl)))} ({x.Label})");
        string most = Join(d.Methods.Where(x => worst.ContainsKey(x.Id)).OrderByDescending(x => worst[x.Id]).Select(x => $"{x.Label} on {worst[x.Id]}"));
        return d.Methods.Count == 1 ? $"The median layer's KL is {medians.Single()}."
            : $"Of the {d.Methods.Count} methods, the one costing the most KL is {most} of the {d.Matrices.Count} layers; the median layer's KL is {Join(medians)}.";
    }

    /// <summary>Layer types and blocks below the typical one under every method: where compression is cheap.</summary>
    private static string? Cheap(AnalysisDocument d)
    {
        var types = AnalysisDocument.Types.Where(t => d.Methods.All(x =>
        {
            var byType = MeanByType(d, x.Id);
            return byType.Single(b => b.Type == t).Mean < Median(byType.Select(b => b.Mean));
        })).ToList();
        var blocks = d.Blocks.Where(b => d.Methods.All(x =>
        {
            var perBlock = d.Blocks.Select(bb => d.Matrices.Where(m => m.Layer == bb.Layer).Sum(m => m.Sensitivity[x.Id].Kl)).ToList();
            return perBlock[b.Layer] < perBlock.Average();
        })).Select(b => b.Layer).ToList();
        string typeText = types.Count > 0 ? $"layer type{(types.Count > 1 ? "s" : "")} {Join(types)} (below the median type)" : "no layer type is below the median type";
        string blockText = blocks.Count > 0 ? $"block{(blocks.Count > 1 ? "s" : "")} {Join(blocks.Select(b => b.ToString(Inv)))} (below the average block)" : "no block is below the average block";
        return $"Cheap under every method measured: {typeText}; {blockText}.";
    }

    /// <summary>
    /// Where the whitened spectra say low rank pays: per type, the median over blocks of the rank holding 90 % and 99 % of
    /// the output energy (a 10 % and a 1 % relative output error) against the break-even rank; and what whitening changes.
    /// </summary>
    private static string LowRank(AnalysisDocument d)
    {
        List<(string Type, double Ratio)> ByType(double p) =>
            [.. AnalysisDocument.Types.Select(t => (t, Median(d.Matrices.Where(m => m.Type == t).Select(m => m.Whitened.EffectiveRanks.Single(r => r.Energy == p).OfBreakEven))))
                .OrderBy(x => x.Item2)];
        string Level(double p)
        {
            var types = ByType(p);
            var pays = types.Where(x => x.Ratio < 1).Select(x => x.Type).ToList();
            var not = types.Where(x => x.Ratio >= 1).Select(x => x.Type).ToList();
            string verdict = not.Count == 0 ? "below it for every type" : pays.Count == 0 ? "above it for every type"
                : pays.Count >= not.Count ? $"below it for every type but {Join(not)}" : $"below it for {Join(pays)} only";
            return $"{Join(types.Select(x => $"{Percent(x.Ratio)} ({x.Type})"))} of that rank — {verdict}";
        }
        double raw = Median(d.Matrices.Select(m => m.Raw.EffectiveRanks.Single(r => r.Energy == 0.90).OfMinDimension));
        double whitened = Median(d.Matrices.Select(m => m.Whitened.EffectiveRanks.Single(r => r.Energy == 0.90).OfMinDimension));
        double kept = Median(d.Matrices.Select(m => m.Whitened.EnergyAtHalfParameters));
        return "Low rank pays below the break-even rank mn/(m + n). The whitened spectra (W·L: energies are output energies on the calibration inputs) " +
            $"hold 90 % of their energy (a 10 % relative output error) at {Level(0.90)}; 99 % (a 1 % error) at {Level(0.99)} (medians over blocks). " +
            $"Whitening moves the median rank for 90 % from {Percent(raw)} to {Percent(whitened)} of min(m, n); at half the parameters the median layer keeps {Percent(kept)} of its output energy.";
    }

    /// <summary>The site with the largest outlier, and channels that are outliers in most blocks.</summary>
    private static string Outliers(AnalysisDocument d)
    {
        var worst = d.Sites.Where(s => s.MaxAbs.Ratio is not null).MaxBy(s => s.MaxAbs.Ratio!.Value);
        if (worst is null) return "No site has a nonzero median channel, so no outlier ratio is defined.";
        var text = string.Create(Inv, $"The largest activation outlier enters {Join(worst.ReadBy)} of block {worst.Layer}: channel {worst.MaxAbs.Top[0].Channel} " +
            $"reaches max |x| = {worst.MaxAbs.Max:G3}, {Times(worst.MaxAbs.Ratio!.Value)} the median channel.");
        var recurring = new List<string>();
        foreach (var site in d.Sites.Select(s => s.Site).Distinct())
        {
            var sites = d.Sites.Where(s => s.Site == site).ToList();
            var channels = sites.SelectMany(s => s.MaxAbs.Top.Select(t => t.Channel)).GroupBy(ch => ch)
                .Where(g => g.Count() * 2 > sites.Count && sites.Count > 1).OrderByDescending(g => g.Count()).ThenBy(g => g.Key).ToList();
            if (channels.Count > 0)
                recurring.Add(string.Create(Inv, $"{Join(sites[0].ReadBy)} input: channel{(channels.Count > 1 ? "s" : "")} {Join(channels.Select(g => $"{g.Key} ({g.Count()} of {sites.Count} blocks)"))}"));
        }
        return recurring.Count == 0 ? text + $" No channel is among the top {ActivationOutliers.TopChannels} by max |x| in most blocks of any site."
            : text + $" Outlier channels that recur across depth (top {ActivationOutliers.TopChannels} by max |x| in most blocks): {string.Join("; ", recurring)}.";
    }

    /// <summary>Block influence's extremes and whether it ranks blocks as the measured sensitivity does.</summary>
    private static string Influence(AnalysisDocument d)
    {
        var order = d.Blocks.OrderByDescending(b => b.BlockInfluence).ToList();
        var text = string.Create(Inv, $"Block influence (ShortGPT, 1 − cos(input, output)) is highest for block {order[0].Layer} ({order[0].BlockInfluence:0.000}) " +
            $"and lowest for block {order[^1].Layer} ({order[^1].BlockInfluence:0.000}), the block ShortGPT would drop first.");
        if (d.Methods.Count == 0 || d.Blocks.Count < 3) return text;
        double rho = Spearman(d.Blocks.Select(b => b.BlockInfluence).ToList(), d.Blocks.Select(b => b.SensitivityIndex).ToList());
        return text + string.Create(Inv, $" Its ranking of the blocks {(rho >= 0.5 ? "agrees with" : rho > -0.5 ? "only loosely follows" : "opposes")} the measured sensitivity's (Spearman ρ = {rho:0.00}).");
    }

    /// <summary>Spearman's rank correlation: Pearson's correlation of the ranks (ties take their mean rank).</summary>
    public static double Spearman(IReadOnlyList<double> x, IReadOnlyList<double> y)
    {
        var (rx, ry) = (Ranks(x), Ranks(y));
        double mx = rx.Average(), my = ry.Average(), sxy = 0, sxx = 0, syy = 0;
        for (int i = 0; i < rx.Length; i++) { sxy += (rx[i] - mx) * (ry[i] - my); sxx += (rx[i] - mx) * (rx[i] - mx); syy += (ry[i] - my) * (ry[i] - my); }
        return sxx > 0 && syy > 0 ? sxy / Math.Sqrt(sxx * syy) : 0;
    }

    private static double[] Ranks(IReadOnlyList<double> v)
    {
        var order = Enumerable.Range(0, v.Count).OrderBy(i => v[i]).ToArray();
        var ranks = new double[v.Count];
        for (int i = 0; i < order.Length;)
        {
            int j = i;
            while (j + 1 < order.Length && v[order[j + 1]] == v[order[i]]) j++;
            for (int k = i; k <= j; k++) ranks[order[k]] = (i + j) / 2.0;
            i = j + 1;
        }
        return ranks;
    }

    public static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        if (sorted.Length == 0) return double.NaN;
        int n = sorted.Length;
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }

    private static string Join(IEnumerable<string> items)
    {
        var list = items.ToList();
        return list.Count <= 1 ? string.Concat(list) : string.Join(", ", list.Take(list.Count - 1)) + " and " + list[^1];
    }

    private static string Capital(string text) => text.Length == 0 ? text : char.ToUpperInvariant(text[0]) + text[1..];
}
