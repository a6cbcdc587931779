using LlmShrink.Compression;
using LlmShrink.Compression.Recipes;
using LlmShrink.Model;
using LlmShrink.Planning;

namespace LlmShrink.Analysis;

/// <summary>One compression whose damage <c>analyze</c> measures on each block linear alone.</summary>
/// <param name="Id">Its name in <c>--methods</c> and in analysis.json.</param>
/// <param name="Candidate">The planner's name for the same candidate (<see cref="Planning.Candidate.NameOf"/>), so the numbers line up with a menu.</param>
/// <param name="Label">A short name for sentences and chart titles.</param>
public sealed record SensitivityMethod(string Id, string Candidate, string Label, string Description)
{
    /// <summary>
    /// 3-bit RTN in symmetric groups of 128; 50 % unstructured Wanda; and "half rank": svd-llm at ratio 0.5, the rank
    /// ⌊mn/(2(m + n))⌋ whose factors store half the matrix's values. A literal rank min(m, n)/2 would save nothing: it is at
    /// or above the break-even rank mn/(m + n) (equal for a square matrix, above it otherwise), so its factors store at
    /// least as many values as the matrix itself.
    /// </summary>
    private static readonly (string Id, ModifierSpec Step, string Label, string Description)[] Known =
    [
        ("rtn-3bit", new ModifierSpec("rtn").With("bits", 3).With("group_size", 128).With("symmetric", true), "3-bit RTN", "3-bit RTN, symmetric groups of 128"),
        ("wanda-50", new ModifierSpec("wanda").With("sparsity", 0.5), "50 % Wanda", "50 % unstructured Wanda"),
        ("half-rank", new ModifierSpec("svd-llm").With("ratio", 0.5), "half rank", "half rank (svd-llm keeping half the parameters)"),
    ];

    public static readonly IReadOnlyList<SensitivityMethod> All =
        [.. Known.Select(k => new SensitivityMethod(k.Id, Planning.Candidate.NameOf([k.Step]), k.Label, k.Description))];

    /// <summary>The method as a planner candidate (its step built and validated as a recipe's).</summary>
    public Planning.Candidate ToCandidate() => new(Candidate, [Known.Single(k => k.Id == Id).Step]);

    /// <summary>A comma-separated list of ids (<c>--methods</c>), in the order given.</summary>
    public static IReadOnlyList<SensitivityMethod> Parse(string list)
    {
        var ids = list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (ids.Length == 0) throw new ShrinkException($"--methods: name at least one of {string.Join(", ", All.Select(m => m.Id))}");
        return [.. ids.Distinct().Select(id => All.FirstOrDefault(m => m.Id == id)
            ?? throw new ShrinkException($"--methods: unknown method '{id}' (known: {string.Join(", ", All.Select(m => m.Id))})"))];
    }
}

/// <summary>
/// What compressing one layer alone costs: the mean KL per held-back token between the original model and the model
/// with only this layer replaced (the planner's end-to-end measurement, EXL3-style, on every layer rather than fused
/// groups), the layer's relative output error on calibration inputs (the planner's proxy), and its bytes as a compressed
/// folder stores it (unstructured sparsity is stored dense there).
/// </summary>
public sealed record LayerSensitivity(double Kl, double RelativeOutputError, long Bytes)
{
    /// <summary>
    /// Measures every method on every block linear with <see cref="SensitivityMeasurement"/> (one group per layer, every
    /// candidate's KL measured), which also streams the calibration past <paramref name="observer"/>. Returns the
    /// sensitivities by block and layer, each keyed by method id.
    /// </summary>
    public static Dictionary<(int Layer, LinearRole Role), Dictionary<string, LayerSensitivity>> Measure(LoadedModel model, Transformer transformer,
        CalibrationSet calibration, int[][] heldBack, IReadOnlyList<SensitivityMethod> methods, IMeasurementObserver observer,
        IProgress<PipelineProgress>? progress, CancellationToken cancel)
    {
        var groups = LayerGroup.Of(model.Config, fused: false);
        var measurement = new SensitivityMeasurement(model, transformer, groups, [.. methods.Select(m => m.ToCandidate())], FolderStorageCost.Instance, anchors: 1)
        {
            MeasureEveryCandidate = true,
            Observer = observer,
        };
        var table = measurement.Measure(calibration, heldBack, "analyze", progress, cancel);
        var result = new Dictionary<(int, LinearRole), Dictionary<string, LayerSensitivity>>();
        for (int g = 0; g < groups.Count; g++)
            result[(groups[g].Layer, groups[g].Roles.Single())] = methods.Select((m, i) => (m.Id, Entry: table.Entries[g][i]))
                .ToDictionary(x => x.Id, x => new LayerSensitivity(x.Entry.MeasuredKl!.Value, x.Entry.Proxy, x.Entry.Bytes));
        return result;
    }

    /// <summary>
    /// How sensitive each block is, relative to the others: for each method, the block's summed KL over its layers (to first
    /// order, the KL of compressing the whole block that way) divided by the mean over blocks; then the geometric mean of
    /// those ratios over the methods, so no one method's scale dominates. 1 is an average block.
    /// </summary>
    public static double[] BlockIndex(int blocks, IReadOnlyList<(int Layer, IReadOnlyDictionary<string, LayerSensitivity> Sensitivity)> layers, IReadOnlyList<string> methods)
    {
        var logSum = new double[blocks];
        foreach (var method in methods)
        {
            var perBlock = new double[blocks];
            foreach (var (layer, sensitivity) in layers) perBlock[layer] += Math.Max(sensitivity[method].Kl, 0);
            double mean = perBlock.Average();
            if (mean > 0)
                for (int b = 0; b < blocks; b++) logSum[b] += Math.Log(Math.Max(perBlock[b] / mean, 1e-12));
        }
        return [.. logSum.Select(s => Math.Exp(s / Math.Max(1, methods.Count)))];
    }
}
