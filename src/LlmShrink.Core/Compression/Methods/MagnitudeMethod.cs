using LlmShrink.Compression.Pruning;
using LlmShrink.Compression.Recipes;

namespace LlmShrink.Compression.Methods;

/// <summary>Magnitude pruning: the smallest |W_ij| of each row (or of each group of M inputs) go; no calibration data used.</summary>
public sealed class MagnitudeMethod(PruningParameters pruning) : ICompressionMethod
{
    public string Name => "magnitude";
    public StatisticsNeeds Needs => StatisticsNeeds.None;

    public static ICompressionMethod FromRecipe(RecipeParameters p) => new MagnitudeMethod(PruningParameters.Read(p));

    public void CompressBlock(BlockCompression block)
    {
        foreach (var role in block.Targets)
        {
            var (rows, columns) = block.Shape(role);
            var w = (float[])block.Weights(role).Clone();
            var keep = MagnitudePruning.Prune(w, rows, columns, pruning.Pattern, pruning.Sparsity);
            block.SetPruned(role, w, keep, pruning.ToString());
        }
    }
}
