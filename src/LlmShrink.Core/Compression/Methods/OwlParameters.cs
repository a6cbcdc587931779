namespace LlmShrink.Compression.Methods;

/// <summary>
/// The keys of <c>allocation: owl</c> on an unstructured pruning modifier (<see cref="OwlAllocation"/>): <c>owl_lambda</c>,
/// λ, how far a block's sparsity may move from the target S (each block stays within [S − λ, S + λ]), and <c>owl_m</c>, M,
/// the multiple of a block's mean score above which a score counts as an outlier. Defaults are the values Yin et al. 2023
/// use for LLaMA at 70 % sparsity (λ = 0.08, M = 5; their Table 8 sweeps M ∈ {3, 5, 7, 10} and λ from 0.02 to 0.2).
/// </summary>
public sealed record OwlParameters(double Lambda, double M)
{
    public const double DefaultLambda = 0.08, DefaultM = 5;
}
