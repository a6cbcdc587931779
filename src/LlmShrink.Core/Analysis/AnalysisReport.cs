using System.Globalization;
using System.Text;

namespace LlmShrink.Analysis;

/// <summary>report.md: the summary, the charts, and the tables behind them, all from analysis.json's numbers.</summary>
public static class AnalysisReport
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static string Write(AnalysisDocument d)
    {
        var s = new StringBuilder();
        var m = d.Model;
        var c = d.Calibration;
        s.AppendLine($"# LlmShrink analysis of `{m.Source}`");
        s.AppendLine();
        s.AppendLine("| | |");
        s.AppendLine("|---|---|");
        s.AppendLine(Inv, $"| model | {m.Architecture}, {m.Layers} blocks, hidden {m.HiddenSize}, MLP {m.IntermediateSize}, {m.Heads} heads / {m.KvHeads} KV heads, vocabulary {m.VocabSize}, {m.BytesOnDisk:N0} bytes |");
        s.AppendLine(Inv, $"| calibration | `{c.Source}`: {c.Samples} samples × {c.SequenceLength} tokens, seed {c.Seed} ({c.Tokens:N0} tokens) |");
        if (d.Methods.Count > 0)
            s.AppendLine(Inv, $"| KL measured on | {c.HeldBackWindows} held-back windows, {c.HeldBackTokens:N0} tokens no calibration sample covers |");
        s.AppendLine(Inv, $"| matrices | {d.Matrices.Count} block linears (lm_head is not analyzed) |");
        s.AppendLine(Inv, $"| time | {d.Run.Seconds:F1} s: streaming pass {d.Run.MeasurementSeconds:F1} s, of which spectra and outliers {d.Run.SpectraSeconds:F1} s |");
        s.AppendLine(Inv, $"| peak memory (working set) | {d.Run.PeakWorkingSetBytes / (1024.0 * 1024):F0} MiB |");
        s.AppendLine(Inv, $"| threads | {(d.Run.Threads == 0 ? $"all {d.Run.ProcessorCount} cores" : d.Run.Threads.ToString(Inv))} |");
        s.AppendLine();
        s.AppendLine("Every number below is in `analysis.json` (format: docs/FORMAT.md, \"analysis.json\").");
        s.AppendLine();
        s.AppendLine("## Summary");
        s.AppendLine();
        foreach (var sentence in d.Summary) s.AppendLine($"- {sentence}");
        s.AppendLine();
        if (d.Methods.Count > 0) Sensitivity(s, d);
        Spectra(s, d);
        Outliers(s, d);
        Influence(s, d);
        return s.ToString();
    }

    private static string Kl(double kl) => kl.ToString("0.00E+0", Inv);

    private static void Sensitivity(StringBuilder s, AnalysisDocument d)
    {
        s.AppendLine("## Sensitivity: KL to the original with only one layer compressed");
        s.AppendLine();
        s.AppendLine($"![Sensitivity per layer and method]({AnalysisCharts.Sensitivity})");
        s.AppendLine();
        s.AppendLine("Each block linear is replaced alone — the rest of the model stays float — and the mean KL(original ‖ changed) per");
        s.AppendLine("token is measured on the held-back windows (nats/token), as the planner measures its candidates. Methods:");
        s.AppendLine();
        foreach (var method in d.Methods) s.AppendLine($"- `{method.Id}`: {method.Description} (candidate `{method.Candidate}`)");
        s.AppendLine();
        if (d.Methods.Any(x => x.Id == "half-rank"))
        {
            s.AppendLine("\"Half rank\" keeps half the layer's parameters: rank ⌊mn/(2(m + n))⌋, SVD-LLM's whitened truncation. A literal");
            s.AppendLine("rank min(m, n)/2 would save nothing: it is at or above the break-even rank mn/(m + n), where the two factors");
            s.AppendLine("store as many values as the matrix.");
            s.AppendLine();
        }
        s.AppendLine("Mean KL per layer type over the blocks:");
        s.AppendLine();
        s.AppendLine("| layer type | " + string.Join(" | ", d.Methods.Select(x => $"{x.Id} mean | {x.Id} max (block)")) + " |");
        s.AppendLine("|---|" + string.Concat(d.Methods.Select(_ => "---:|---:|")));
        foreach (var type in AnalysisDocument.Types)
        {
            var ms = d.Matrices.Where(x => x.Type == type).ToList();
            s.Append($"| {type} |");
            foreach (var method in d.Methods)
            {
                var worst = ms.MaxBy(x => x.Sensitivity[method.Id].Kl)!;
                s.Append(Inv, $" {Kl(ms.Average(x => x.Sensitivity[method.Id].Kl))} | {Kl(worst.Sensitivity[method.Id].Kl)} ({worst.Layer}) |");
            }
            s.AppendLine();
        }
        s.AppendLine();
        s.AppendLine("Every layer: KL, and in brackets the relative output error ‖XWᵀ − XŴᵀ‖²/‖XWᵀ‖² on calibration inputs (the planner's proxy).");
        s.AppendLine();
        s.AppendLine("| module | " + string.Join(" | ", d.Methods.Select(x => x.Id)) + " |");
        s.AppendLine("|---|" + string.Concat(d.Methods.Select(_ => "---:|")));
        foreach (var matrix in d.Matrices)
            s.AppendLine(Inv, $"| {matrix.Module} | {string.Join(" | ", d.Methods.Select(x => $"{Kl(matrix.Sensitivity[x.Id].Kl)} ({matrix.Sensitivity[x.Id].RelativeOutputError:0.0E+0})"))} |");
        s.AppendLine();
    }

    private static void Spectra(StringBuilder s, AnalysisDocument d)
    {
        s.AppendLine("## Singular value spectra");
        s.AppendLine();
        s.AppendLine($"![Singular value decay per layer type]({AnalysisCharts.Spectra})");
        s.AppendLine();
        s.AppendLine($"![Effective rank by depth]({AnalysisCharts.EffectiveRanks})");
        s.AppendLine();
        s.AppendLine("Raw: the singular values of W. Whitened: those of W·L with LLᵀ = XXᵀ/N on the block's N calibration inputs");
        s.AppendLine("(SVD-LLM's whitening): σᵢ² is the output energy per token that dropping direction i loses, so the whitened spectrum");
        s.AppendLine("says what a low-rank factorization keeps of the layer's outputs. r₉₀, r₉₅, r₉₉: the smallest rank holding 90/95/99 % of");
        s.AppendLine("Σσ², as a percentage of min(m, n) and, after the slash, of the break-even rank mn/(m + n) (below 100 % factors save");
        s.AppendLine("parameters). \"Kept at ½\": the energy the half-parameter rank keeps.");
        s.AppendLine();
        s.AppendLine("| module | shape | break-even | raw r₉₀ | raw r₉₅ | raw r₉₉ | whitened r₉₀ | whitened r₉₅ | whitened r₉₉ | kept at ½ raw / whitened |");
        s.AppendLine("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var m in d.Matrices)
        {
            string Ranks(Spectrum sp) => string.Join(" | ", sp.EffectiveRanks.Select(r => string.Create(Inv, $"{r.Rank} ({100 * r.OfMinDimension:0} % / {100 * r.OfBreakEven:0} %)")));
            s.AppendLine(Inv, $"| {m.Module} | {m.Rows} × {m.Columns} | {m.BreakEvenRank:0.#} | {Ranks(m.Raw)} | {Ranks(m.Whitened)} | {100 * m.Raw.EnergyAtHalfParameters:0.0} % / {100 * m.Whitened.EnergyAtHalfParameters:0.0} % |");
        }
        s.AppendLine();
    }

    private static void Outliers(StringBuilder s, AnalysisDocument d)
    {
        s.AppendLine("## Activation outliers");
        s.AppendLine();
        s.AppendLine($"![Outlier ratio by depth and site]({AnalysisCharts.Outliers})");
        s.AppendLine();
        s.AppendLine("Per input site and block, over the calibration tokens: each channel's max |x| and mean |x|, and how far the largest");
        s.AppendLine("channel stands above the median channel. The top channels are listed with their ratio to the median.");
        s.AppendLine();
        s.AppendLine("| block | input of | channels | max \\|x\\| | max/median | top channels by max \\|x\\| | mean \\|x\\| max/median | top channels by mean \\|x\\| |");
        s.AppendLine("|---:|---|---:|---:|---:|---|---:|---|");
        foreach (var site in d.Sites)
        {
            static string Ratio(double? r) => r is { } v ? v.ToString("0.0", Inv) + "×" : "—";
            static string Top(ChannelStatistic c) => string.Join(", ", c.Top.Take(4).Select(t => $"{t.Channel} ({Ratio(t.Ratio)})"));
            s.AppendLine(Inv, $"| {site.Layer} | {string.Join("/", site.ReadBy)} | {site.Channels} | {site.MaxAbs.Max:G4} | {Ratio(site.MaxAbs.Ratio)} | {Top(site.MaxAbs)} | {Ratio(site.MeanAbs.Ratio)} | {Top(site.MeanAbs)} |");
        }
        s.AppendLine();
    }

    private static void Influence(StringBuilder s, AnalysisDocument d)
    {
        s.AppendLine("## Block influence");
        s.AppendLine();
        s.AppendLine($"![Block influence by depth]({AnalysisCharts.Influence})");
        s.AppendLine();
        s.AppendLine("Block influence (ShortGPT, Men et al. 2024, eq. 1): BI = 1 − mean over calibration tokens of cos(block input, block output);");
        s.AppendLine("a block with a low BI barely turns the hidden state, and ShortGPT removes the lowest first. The sensitivity index is the");
        s.AppendLine("block's summed KL over its layers against the average block's, geometric mean over the methods.");
        s.AppendLine();
        s.AppendLine("| block | BI | sensitivity index |");
        s.AppendLine("|---:|---:|---:|");
        foreach (var b in d.Blocks) s.AppendLine(Inv, $"| {b.Layer} | {b.BlockInfluence:0.0000} | {(d.Methods.Count > 0 ? b.SensitivityIndex.ToString("0.00", Inv) : "—")} |");
    }
}
