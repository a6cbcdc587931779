using LlmShrink.Compression.Pruning;
using LlmShrink.Compression.Recipes;
using LlmShrink.Model;

namespace LlmShrink.Compression.Methods;

/// <summary>
/// Attention head pruning in whole grouped-query groups (Minitron; LLM-Pruner's head groups): in every block whose
/// o_proj a target selects, round(<c>fraction</c> · KV heads) key/value heads go with the query heads that read them,
/// lowest summed <see cref="StructuredImportance"/> of their o_proj input columns first. At least one group stays.
/// </summary>
public sealed class HeadPruningMethod(double fraction) : ICompressionMethod
{
    public string Name => "prune-heads";
    public StatisticsNeeds Needs => StatisticsNeeds.None;
    public bool CanTargetLmHead => false;

    public static ICompressionMethod FromRecipe(RecipeParameters p) => new HeadPruningMethod(StructuredParameters.Fraction(p));

    public void CompressBlock(BlockCompression block)
    {
        if (!block.Targets.Contains(LinearRole.O)) return;
        var shape = block.BlockShape;
        int remove = (int)Math.Round(fraction * shape.KvHeads, MidpointRounding.AwayFromZero);
        if (remove == 0) return;
        if (remove >= shape.KvHeads)
            throw new ShrinkException($"recipe conflict: prune-heads with fraction {fraction} removes all {shape.KvHeads} key/value heads of block {block.Layer}");
        int columns = shape.Heads * block.Config.HeadDim;
        var norms = block.Statistics(InputSite.AttentionOutput).SquareMean().Select(MathF.Sqrt).ToArray();
        var scores = StructuredImportance.ColumnScores(block.Weights(LinearRole.O), block.Config.HiddenSize, columns, norms);
        var groups = StructuredImportance.GroupScores(scores, shape.Heads / shape.KvHeads * block.Config.HeadDim);
        block.RemoveKvGroups(StructuredImportance.Lowest(groups, remove));
    }
}
