using System.Globalization;
using System.Text;

namespace LlmShrink.Planning;

/// <summary>
/// plan.md: the budget and what was met, the per-group choices with their bytes, decode time, proxy, measured and predicted ΔKL and
/// why each group got what it got (what one step cheaper or one step better would have traded), the Pareto front, and
/// every uniform candidate placed against the plan of the same size.
/// </summary>
public static class PlanReport
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static string Write(AutoRequest request, AutoSummary summary, MultipleChoiceKnapsack knapsack)
    {
        var t = summary.Table;
        var chosen = summary.Chosen;
        var timing = summary.Decode;
        var s = new StringBuilder();
        s.AppendLine("# LlmShrink automatic plan");
        s.AppendLine();
        s.AppendLine("| | |");
        s.AppendLine("|---|---|");
        s.AppendLine($"| model | `{request.Model}` |");
        s.AppendLine($"| budget | {Budget(request)} |");
        s.AppendLine(Inv, $"| calibration | `{request.CalibrationFile}`: {request.Samples} × {request.SequenceLength} tokens, seed {request.Seed}; KL measured on {summary.HeldBackTokens} held-back tokens no sample covers |");
        s.AppendLine(Inv, $"| menu | {summary.Candidates.Count} candidates × {summary.Groups.Count} groups ({(request.Format == PlanFormat.Gguf ? "every matrix typed on its own, as GGUF stores it" : "q/k/v and gate/up share a scheme, as vLLM fuses them")}) |");
        s.AppendLine(Inv, $"| measurement | {(summary.FromCache ? "read from the cache" : $"{t.MeasurementSeconds:F1} s")} |");
        if (request.AnalysisFile is not null)
            s.AppendLine(Inv, $"| analysis | {summary.FromAnalysis} ΔKLs (group, candidate) read from `{request.AnalysisFile}` instead of measured; a fused group's is the sum of its layers' |");
        s.AppendLine(Inv, $"| planned layers | {t.Parameters:N0} weights, {chosen.PlannedBytes:N0} bytes = {summary.BitsPerWeight:F3} bits per weight (every stored tensor and header entry) |");
        s.AppendLine(Inv, $"| written | {chosen.TotalBytes:N0} bytes ({(request.Format == PlanFormat.Gguf ? "model.gguf" : "the safetensors files")}) |");
        if (chosen.Embedding is { } e)
            s.AppendLine(Inv, $"| token embeddings | {e.Stored}, {e.Bytes:N0} bytes ({(summary.Embeddings!.Count > 1 ? "planned: see below" : "as given by --embedding-type")}) |");
        s.AppendLine(Inv, $"| KL on held-back text | predicted {chosen.Selection.Loss + (chosen.Embedding?.Kl ?? 0):E3}, measured {chosen.MeasuredKl:E3} |");
        s.AppendLine(timing is null
            ? string.Create(Inv, $"| generation on this machine | measured {chosen.MeasuredTokensPerSecond:F1} tokens/s (layers are timed only for --min-tokens-per-s) |")
            : string.Create(Inv, $"| generation on this machine | predicted {chosen.PredictedTokensPerSecond:F1} tokens/s, measured {chosen.MeasuredTokensPerSecond:F1} tokens/s (as stored: measured {timing.FloatTokensPerSecond:F1}; {timing.FixedSeconds * 1e6:F0} µs per token no plan changes) |"));
        s.AppendLine(Inv, $"| time | {summary.Elapsed.TotalSeconds:F1} s |");
        s.AppendLine();
        s.AppendLine("## Plans written (closed loop)");
        s.AppendLine();
        s.AppendLine("Tokens/s: generation on this machine, the best of 5 runs of 32 tokens after a 64-token prompt (`llmshrink bench`'s measurement);");
        s.AppendLine("predicted = 1 / (the part no plan changes + the chosen groups' times).");
        s.AppendLine();
        s.AppendLine("| attempt | planned bytes | written bytes | predicted KL | measured KL | predicted tokens/s | measured tokens/s | meets the budget |");
        s.AppendLine("|---:|---:|---:|---:|---:|---:|---:|---|");
        for (int i = 0; i < summary.Attempts.Count; i++)
        {
            var a = summary.Attempts[i];
            s.AppendLine(Inv, $"| {i + 1}{(a == chosen ? " (kept)" : "")} | {a.PlannedBytes:N0} | {a.TotalBytes:N0} | {a.Selection.Loss:E3} | {a.MeasuredKl:E3} | {(a.PredictedTokensPerSecond is { } p ? p.ToString("F1", Inv) : "—")} | {a.MeasuredTokensPerSecond:F1} | {(a.MeetsBudget ? "yes" : "no")} |");
        }
        s.AppendLine();
        s.AppendLine("## Choices");
        s.AppendLine();
        s.AppendLine("Proxy = relative output error ‖XWᵀ − XŴᵀ‖²/‖XWᵀ‖² on calibration inputs; ΔKL = KL on the held-back text with only");
        s.AppendLine("this group changed (measured for the candidates on each group's bytes/proxy hull, else sensitivity × proxy).");
        s.AppendLine("\"Cheaper\" and \"better\" are the neighbouring options on the group's own front: bytes saved or spent, ΔKL added or removed.");
        s.AppendLine("µs/token: the group's layers at one token, timed alone on this machine (median of 5 samples).");
        s.AppendLine();
        s.AppendLine("| group | choice | bytes | µs/token | proxy | ΔKL measured | ΔKL predicted | sensitivity | one step cheaper | one step better |");
        s.AppendLine("|---|---|---:|---:|---:|---:|---:|---:|---|---|");
        for (int g = 0; g < summary.Groups.Count; g++)
        {
            int c = chosen.Selection.Choices[g];
            var m = t.Entries[g][c];
            var predicted = t.PredictedKl(g);
            var front = GroupFront(t.Entries[g], predicted);
            int at = front.IndexOf(c);
            string Step(int other) => other < 0 || other >= front.Count ? "—"
                : FormattableString.Invariant($"{t.Candidates[front[other]]}: {t.Entries[g][front[other]].Bytes - m.Bytes:+#,0;-#,0} B, {predicted[front[other]] - predicted[c]:+0.0E0;-0.0E0} KL");
            s.AppendLine(Inv, $"| {summary.Groups[g].Label} | {t.Candidates[c]} | {m.Bytes:N0} | {(m.Seconds is { } seconds ? (seconds * 1e6).ToString("F1", Inv) : "—")} | {m.Proxy:E2} | {(m.MeasuredKl is { } kl ? kl.ToString("E2", Inv) : "—")} | {predicted[c]:E2} | {t.Sensitivity(g):G3} | {(at < 0 ? "—" : Step(at - 1))} | {(at < 0 ? "—" : Step(at + 1))} |");
        }
        s.AppendLine();
        if (summary.Embeddings is { Count: > 1 } options)
        {
            s.AppendLine("## Token embeddings");
            s.AppendLine();
            s.AppendLine("Each type measured end to end with only the embeddings rounded as the export writes them. The plan takes the type whose");
            s.AppendLine("KL plus the best layer plan in the bytes it leaves is least (under --max-kl: whose total bytes are).");
            s.AppendLine();
            s.AppendLine("| type | bytes | ΔKL measured |");
            s.AppendLine("|---|---:|---:|");
            foreach (var o in options)
                s.AppendLine(Inv, $"| {o.Stored}{(o == chosen.Embedding ? " (chosen)" : "")} | {o.Bytes:N0} | {o.Kl:E2} |");
            s.AppendLine();
        }
        s.AppendLine("## Pareto front (predicted) and uniform candidates");
        s.AppendLine();
        s.AppendLine("![Pareto front](pareto.png)");
        s.AppendLine();
        s.AppendLine("The whole front comes from one measurement: any other budget re-plans from the cache in seconds (`--cache`).");
        s.AppendLine("Each uniform candidate (every group the same) is shown with the plan the solver finds within its bytes.");
        s.AppendLine();
        s.AppendLine("| plan | planned bytes | bits/weight | predicted KL | plan within those bytes: predicted KL |");
        s.AppendLine("|---|---:|---:|---:|---:|");
        var points = knapsack.Front;
        foreach (int i in Enumerable.Range(0, 12).Select(k => k * (points.Count - 1) / 11).Distinct())
            s.AppendLine(Inv, $"| front point {i + 1} of {points.Count} | {points[i].Cost:N0} | {points[i].Cost * 8.0 / t.Parameters:F3} | {points[i].Loss:E3} | |");
        for (int c = 0; c < t.Candidates.Count; c++)
        {
            long bytes = Enumerable.Range(0, summary.Groups.Count).Sum(g => t.Entries[g][c].Bytes);
            double loss = Enumerable.Range(0, summary.Groups.Count).Sum(g => t.PredictedKl(g)[c]);
            var best = knapsack.WithinCost(bytes);
            s.AppendLine(Inv, $"| uniform {t.Candidates[c]} | {bytes:N0} | {bytes * 8.0 / t.Parameters:F3} | {loss:E3} | {(best is null ? "—" : best.Loss.ToString("E3", Inv))} |");
        }
        s.AppendLine();
        s.AppendLine("Re-apply with `llmshrink compress MODEL --recipe recipe.yaml` and the same `--calib`, `--samples`, `--seq-len` and `--seed`:");
        s.AppendLine(request.Format == PlanFormat.Gguf
            ? $"it runs the same pipeline; `llmshrink export FOLDER --format gguf --type {chosen.Embedding!.Type}` then writes the same model.gguf (the planned layers' blocks copied, the token embeddings as {chosen.Embedding.Stored})."
            : "it runs the same pipeline and writes the same bytes.");
        return s.ToString();
    }

    private static string Budget(AutoRequest r) =>
        r.TargetSize is { } size ? $"--target-size {size:N0} bytes"
        : r.TargetBitsPerWeight is { } bpw ? string.Create(Inv, $"--target-bpw {bpw}")
        : r.MinTokensPerSecond is { } speed ? string.Create(Inv, $"--min-tokens-per-s {speed}")
        : string.Create(Inv, $"--max-kl {r.MaxKl}");

    /// <summary>The group's options on its own front (cheapest first, each better than every cheaper one).</summary>
    private static List<int> GroupFront(CandidateMeasurement[] row, double[] predicted)
    {
        var front = new List<int>();
        double best = double.PositiveInfinity;
        foreach (int i in Enumerable.Range(0, row.Length).OrderBy(i => row[i].Bytes).ThenBy(i => predicted[i]))
            if (predicted[i] < best) { front.Add(i); best = predicted[i]; }
        return front;
    }
}
