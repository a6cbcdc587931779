using LlmShrink.Compression.Pruning;
using LlmShrink.Compression.Recipes;
using LlmShrink.Model;

namespace LlmShrink.Compression.Methods;

/// <summary>
/// Depth pruning: round(<c>fraction</c> · blocks) whole decoder blocks are removed (the residual stream passes them
/// by) and the rest renumbered. <c>selection: influence</c> (default) removes the blocks of lowest ShortGPT Block
/// Influence measured on the calibration set before anything is compressed (<see cref="BlockInfluence"/>); <c>last</c>
/// the final blocks and <c>random</c> (with <c>seed</c>) a random choice — the baselines ShortGPT compares against.
/// Only blocks a target selects (any of their linears) may go; at least one block stays.
/// </summary>
public sealed class DropBlocksMethod(double fraction, string selection, int seed) : ICompressionMethod
{
    public string Name => "drop-blocks";
    public StatisticsNeeds Needs => StatisticsNeeds.None;
    public bool CanTargetLmHead => false;

    public static ICompressionMethod FromRecipe(RecipeParameters p) =>
        new DropBlocksMethod(StructuredParameters.Fraction(p), p.String("selection", "influence", "influence", "last", "random"), p.Int("seed", 0));

    /// <summary>Whether <see cref="Choose"/> needs the blocks' influence (a pass of the calibration set through the model first).</summary>
    public bool NeedsInfluence => selection == "influence";

    /// <summary>The blocks to remove among <paramref name="candidates"/> (of <paramref name="blocks"/>); <paramref name="influence"/> when measured.</summary>
    public IReadOnlySet<int> Choose(int blocks, IReadOnlyList<int> candidates, double[]? influence)
    {
        int count = (int)Math.Round(fraction * blocks, MidpointRounding.AwayFromZero);
        if (count >= blocks) throw new ShrinkException($"recipe conflict: drop-blocks with fraction {fraction} removes all {blocks} blocks");
        if (count > candidates.Count) throw new ShrinkException($"recipe conflict: drop-blocks should remove {count} blocks but its targets select only {candidates.Count}");
        IEnumerable<int> order = selection switch
        {
            "influence" => candidates.OrderBy(b => influence![b]).ThenBy(b => b),
            "last" => candidates.OrderByDescending(b => b),
            _ => Shuffled(candidates, seed),
        };
        return order.Take(count).ToHashSet();
    }

    private static int[] Shuffled(IReadOnlyList<int> items, int seed)
    {
        var shuffled = items.ToArray();
        new Random(seed).Shuffle(shuffled);
        return shuffled;
    }

    /// <summary>Blocks are removed by the pipeline before the block loop; nothing is left to do per block.</summary>
    public void CompressBlock(BlockCompression block) { }
}
