using LlmShrink.Compression.Pruning;
using LlmShrink.Compression.Recipes;

namespace LlmShrink.Compression.Methods;

/// <summary>
/// Magnitude pruning: the smallest |W_ij| of each row (or of each group of M inputs) go; no calibration data used, except by
/// <c>allocation: owl</c>, whose per-block sparsities count the activations' outliers (<see cref="OwlAllocation"/>).
/// </summary>
public sealed class MagnitudeMethod(PruningParameters pruning) : ICompressionMethod
{
    public string Name => "magnitude";
    public StatisticsNeeds Needs => StatisticsNeeds.None;

    public static ICompressionMethod FromRecipe(RecipeParameters p) => new MagnitudeMethod(PruningParameters.Read(p));

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
            var w = (float[])block.Weights(role).Clone();
            var keep = MagnitudePruning.Prune(w, rows, columns, pruning.Pattern, sparsity);
            block.SetPruned(role, w, keep, described);
        }
    }
}
