using LlmShrink.Compression.Pruning;
using LlmShrink.Compression.Recipes;
using LlmShrink.Model;

namespace LlmShrink.Compression.Methods;

/// <summary>
/// Width pruning of the MLP (Minitron, Muralidharan et al. 2024; LLM-Pruner's channel groups): in every block whose
/// down_proj a target selects, the <c>fraction</c> of intermediate channels with the lowest
/// <see cref="StructuredImportance"/> (‖X_j‖₂ at down_proj's input times ‖down[:, j]‖₂) go, with their gate/up rows and
/// down column. The kept width is rounded to a multiple of <c>multiple_of</c> (default 32, so GPTQ words and ggml blocks tile it).
/// </summary>
public sealed class FfnPruningMethod(double fraction, int multipleOf) : ICompressionMethod
{
    public string Name => "prune-ffn";
    public StatisticsNeeds Needs => StatisticsNeeds.None;
    public bool CanTargetLmHead => false;

    public static ICompressionMethod FromRecipe(RecipeParameters p) =>
        new FfnPruningMethod(StructuredParameters.Fraction(p), p.Int("multiple_of", 32, 1, 8, 16, 32, 64, 128, 256));

    /// <summary>Channels kept of <paramref name="width"/>: (1 − fraction)·width rounded to the nearest multiple, at least one multiple.</summary>
    public int KeptWidth(int width) => Math.Min(width, Math.Max(multipleOf, (int)Math.Round((1 - fraction) * width / multipleOf) * multipleOf));

    public void CompressBlock(BlockCompression block)
    {
        if (!block.Targets.Contains(LinearRole.Down)) return;
        int width = block.BlockShape.IntermediateSize, hidden = block.Config.HiddenSize;
        int remove = width - KeptWidth(width);
        if (remove == 0) return;
        var norms = block.Statistics(InputSite.MlpHidden).SquareMean().Select(MathF.Sqrt).ToArray();
        var scores = StructuredImportance.ColumnScores(block.Weights(LinearRole.Down), hidden, width, norms);
        block.RemoveFfnChannels(StructuredImportance.Lowest(scores, remove));
    }
}
