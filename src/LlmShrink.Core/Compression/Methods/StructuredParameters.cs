using LlmShrink.Compression.Recipes;

namespace LlmShrink.Compression.Methods;

/// <summary>The share of a structure a structured pruning method removes: <c>fraction</c> in (0, 1).</summary>
internal static class StructuredParameters
{
    public static double Fraction(RecipeParameters p)
    {
        double fraction = p.Double("fraction", double.NaN, 0, 1);
        if (double.IsNaN(fraction)) throw ShrinkException.InFile(p.Source, $"modifier '{p.Modifier}': fraction: required (the share to remove, in (0, 1))");
        if (!(fraction > 0 && fraction < 1)) throw ShrinkException.InFile(p.Source, $"modifier '{p.Modifier}': fraction: {fraction} is outside (0, 1): removing nothing or everything");
        return fraction;
    }
}
