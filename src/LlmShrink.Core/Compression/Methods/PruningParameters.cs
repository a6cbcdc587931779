using LlmShrink.Compression.Pruning;
using LlmShrink.Compression.Recipes;

namespace LlmShrink.Compression.Methods;

/// <summary>
/// The keys every pruning method reads: <c>pattern</c> (unstructured, or N:M = N weights kept in every M consecutive inputs,
/// e.g. 2:4), <c>sparsity</c> (the fraction of weights removed, in [0, 1); implied by an N:M pattern, where giving a
/// different value is an error) and <c>allocation</c>: <c>uniform</c> (every layer at the sparsity) or <c>owl</c> (each
/// block at its own, averaging the sparsity: <see cref="OwlAllocation"/>, with <c>owl_lambda</c> and <c>owl_m</c>,
/// <see cref="OwlParameters"/>). OWL needs unstructured pruning: an N:M pattern fixes every layer's sparsity.
/// </summary>
public sealed record PruningParameters(SparsityPattern Pattern, double Sparsity, OwlParameters? Owl = null)
{
    public static PruningParameters Read(RecipeParameters p)
    {
        var uniform = ReadUniform(p);
        bool owl = p.String("allocation", "uniform", "uniform", "owl") == "owl";
        if (!owl)
        {
            if (new[] { "owl_lambda", "owl_m" }.FirstOrDefault(p.Has) is { } key)
                throw ShrinkException.InFile(p.Source, $"modifier '{p.Modifier}': {key} applies only with allocation: owl");
            return uniform;
        }
        if (uniform.Pattern.IsNOfM)
            throw ShrinkException.InFile(p.Source, $"modifier '{p.Modifier}': allocation: owl gives each block its own sparsity, but pattern {uniform.Pattern} fixes every layer's at {uniform.Sparsity:0.###}; use pattern: unstructured");
        double s = uniform.Sparsity;
        double lambda = p.Double("owl_lambda", OwlParameters.DefaultLambda, double.MinValue, double.MaxValue);
        // Every block's sparsity S_l lies in [S − λ, S + λ] and must stay a fraction that prunes something: 0 ≤ S − λ, S + λ < 1.
        if (!(lambda >= 0 && lambda < s && s + lambda < 1))
            throw ShrinkException.InFile(p.Source, $"modifier '{p.Modifier}': owl_lambda: {lambda} must be in [0, {s}) and keep sparsity + owl_lambda below 1 (each block is pruned within sparsity ± owl_lambda)");
        double m = p.Double("owl_m", OwlParameters.DefaultM, double.MinValue, double.MaxValue);
        if (!(m > 0 && double.IsFinite(m))) throw ShrinkException.InFile(p.Source, $"modifier '{p.Modifier}': owl_m: {m} must be positive (outliers are scores above owl_m × the block's mean)");
        return uniform with { Owl = new OwlParameters(lambda, m) };
    }

    private static PruningParameters ReadUniform(RecipeParameters p)
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

    /// <summary>
    /// The sparsity to prune block <paramref name="layer"/> at and its report text ("70.0 % unstructured", "63.4 %
    /// unstructured (OWL: 0.612 % outliers)" or "2:4"): the block's OWL sparsity, with the outlier ratio that set it, when
    /// the allocation has it, else the recipe's (lm_head, which OWL's allocation over blocks leaves out).
    /// </summary>
    /// <param name="allocation">What this run's survey allocated; null when none ran.</param>
    public (double Sparsity, string Description) At(int layer, OwlAllocation? allocation, string method)
    {
        if (Pattern.IsNOfM) return (Sparsity, Pattern.ToString());
        if (Owl is null) return (Sparsity, $"{Sparsity * 100:0.0} % unstructured");
        if (allocation is null)
            throw new ShrinkException($"{method}: allocation: owl needs a survey of the whole model before the first block, which only the compression pipeline takes " +
                "(the planner measures one layer group at a time)");
        return allocation.Sparsities.TryGetValue(layer, out double s)
            ? (s, $"{s * 100:0.0} % unstructured (OWL: {allocation.OutlierRatios[layer] * 100:0.000} % outliers)")
            : (Sparsity, $"{Sparsity * 100:0.0} % unstructured");
    }
}
