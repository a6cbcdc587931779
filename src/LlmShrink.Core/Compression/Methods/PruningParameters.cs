using LlmShrink.Compression.Pruning;
using LlmShrink.Compression.Recipes;

namespace LlmShrink.Compression.Methods;

/// <summary>
/// The keys every pruning method reads: <c>pattern</c> (unstructured, or N:M = N weights kept in every M consecutive inputs,
/// e.g. 2:4) and <c>sparsity</c> (the fraction of weights removed, in [0, 1); implied by an N:M pattern, where giving a
/// different value is an error).
/// </summary>
public sealed record PruningParameters(SparsityPattern Pattern, double Sparsity)
{
    public static PruningParameters Read(RecipeParameters p)
    {
        string text = p.String("pattern", "unstructured");
        SparsityPattern pattern;
        try { pattern = SparsityPattern.Parse(text); }
        catch (ShrinkException e) { throw ShrinkException.InFile(p.Source, $"modifier '{p.Modifier}': pattern: {e.Message}"); }
        double? given = p.Has("sparsity") ? p.Double("sparsity", 0, 0, 1) : null;
        if (given is { } s && !(s < 1)) throw ShrinkException.InFile(p.Source, $"modifier '{p.Modifier}': sparsity: {s} is outside [0, 1)");
        if (pattern.ImpliedSparsity is { } implied)
        {
            if (given is { } g && Math.Abs(g - implied) > 1e-9)
                throw ShrinkException.InFile(p.Source, $"modifier '{p.Modifier}': sparsity: {g} contradicts pattern {pattern}, which removes {implied:0.###}");
            return new PruningParameters(pattern, implied);
        }
        return new PruningParameters(pattern, given ?? throw ShrinkException.InFile(p.Source, $"modifier '{p.Modifier}': sparsity: required for unstructured pruning"));
    }

    /// <summary>For the report: "50.0 % unstructured" or "2:4".</summary>
    public override string ToString() => Pattern.IsNOfM ? Pattern.ToString() : $"{Sparsity * 100:0.0} % unstructured";
}
