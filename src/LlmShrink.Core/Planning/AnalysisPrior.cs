using LlmShrink.Analysis;
using LlmShrink.Model;

namespace LlmShrink.Planning;

/// <summary>
/// The ΔKLs <c>llmshrink analyze</c> already measured, read back by the planner (<c>auto --analysis analysis.json</c>).
/// A menu candidate named as one of the analysis's methods (<see cref="SensitivityMethod.Candidate"/>, e.g. 3-bit RTN in
/// symmetric groups of 128) takes on each group the analysis's KL instead of a measurement of its own: on a single-layer
/// group exactly the measurement the planner would make (one layer swapped, same held-back windows), on a fused group the
/// sum over its layers (first order, the same additivity the planner assumes between groups). Those candidates then need
/// no anchor run, so the planner's anchors go to the others. The analysis must come from the same model and the same
/// calibration drawing, or its KLs would be on other windows: anything else is a one-line error.
/// </summary>
public static class AnalysisPrior
{
    /// <returns>[group][candidate] → the analysis's ΔKL, or null where it measured nothing that candidate does.</returns>
    public static double?[][] Read(string path, AutoRequest request, LoadedModel model, IReadOnlyList<LayerGroup> groups, IReadOnlyList<Candidate> candidates, int[][] heldBack)
    {
        var document = AnalysisDocument.Load(path);
        var c = model.Config;
        var m = document.Model;
        if (m.BytesOnDisk != model.BytesOnDisk || m.Layers != c.NumLayers || m.HiddenSize != c.HiddenSize || m.VocabSize != c.VocabSize)
            throw ShrinkException.InFile(path, $"analyzes '{m.Source}' ({m.BytesOnDisk:N0} bytes, {m.Layers} blocks), not this model ({model.BytesOnDisk:N0} bytes, {c.NumLayers} blocks)");
        var a = document.Calibration;
        string asked = Path.GetFileName(request.CalibrationFile);
        if (Path.GetFileName(a.Source) != asked || a.Samples != request.Samples || a.SequenceLength != request.SequenceLength || a.Seed != request.Seed
            || a.HeldBackWindows != heldBack.Length || a.HeldBackTokens != heldBack.Sum(w => (long)w.Length))
            throw ShrinkException.InFile(path, $"its KLs were measured on {a.HeldBackWindows} held-back windows of '{Path.GetFileName(a.Source)}' " +
                $"({a.Samples} × {a.SequenceLength} samples, seed {a.Seed}), not on this run's {heldBack.Length} of '{asked}' " +
                $"({request.Samples} × {request.SequenceLength}, seed {request.Seed}); give auto the same --calib, --samples, --seq-len, --seed and --kl-samples");

        var byModule = document.Matrices.ToDictionary(x => x.Module);
        var methods = document.Methods.ToDictionary(x => x.Candidate);
        return [.. groups.Select(group => candidates.Select(candidate =>
        {
            if (!methods.TryGetValue(candidate.Name, out var method) || group.Roles.Contains(LinearRole.LmHead)) return (double?)null;
            double sum = 0;
            foreach (var role in group.Roles)
            {
                if (!byModule.TryGetValue(LinearRoles.ModulePath(group.Layer, role), out var matrix) || !matrix.Sensitivity.TryGetValue(method.Id, out var s))
                    return null;
                sum += Math.Max(s.Kl, 0);
            }
            return sum;
        }).ToArray())];
    }
}
