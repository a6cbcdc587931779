using LlmShrink.Compression.Pruning;
using LlmShrink.Compression.Recipes;

namespace LlmShrink.Compression.Methods;

/// <summary>
/// Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models"): weight times input norm,
/// |W_ij|·‖X_j‖₂, ranked within each output row (or group of M inputs); no weight update.
/// </summary>
public sealed class WandaMethod(PruningParameters pruning) : ICompressionMethod
{
    public string Name => "wanda";
    public StatisticsNeeds Needs => StatisticsNeeds.None; // per-channel Σx² is always gathered

    public static ICompressionMethod FromRecipe(RecipeParameters p) => new WandaMethod(PruningParameters.Read(p));

    /// <summary>With <c>allocation: owl</c>, the per-block sparsities this run's survey chose (null before the survey, and for uniform pruning).</summary>
    public OwlAllocation? Owl { get; private set; }

    public bool SurveysModel => pruning.Owl is not null;

    public void Survey(ModelSurvey survey) => Owl = OwlAllocation.Measure(survey, pruning);

    public void CompressBlock(BlockCompression block)
    {
        var (sparsity, described) = pruning.At(block.Layer, Owl, Name);
        foreach (var role in block.Targets)
        {
            var (rows, columns) = block.Shape(role);
            // ‖X_j‖₂ up to the common factor √n, which does not change any ranking.
            var norms = block.Statistics(LlmShrink.Model.LinearRoles.Site(role)).SquareMean().Select(MathF.Sqrt).ToArray();
            var w = (float[])block.Weights(role).Clone();
            var keep = Wanda.Prune(w, rows, columns, norms, pruning.Pattern, sparsity);
            block.SetPruned(role, w, keep, described);
        }
    }
}
