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

    public void CompressBlock(BlockCompression block)
    {
        foreach (var role in block.Targets)
        {
            var (rows, columns) = block.Shape(role);
            // ‖X_j‖₂ up to the common factor √n, which does not change any ranking.
            var norms = block.Statistics(LlmShrink.Model.LinearRoles.Site(role)).SquareMean().Select(MathF.Sqrt).ToArray();
            var w = (float[])block.Weights(role).Clone();
            var keep = Wanda.Prune(w, rows, columns, norms, pruning.Pattern, pruning.Sparsity);
            block.SetPruned(role, w, keep, pruning.ToString());
        }
    }
}
