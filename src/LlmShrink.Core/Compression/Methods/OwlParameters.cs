namespace LlmShrink.Compression.Methods;

/// <summary>
/// The keys of <c>allocation: owl</c> on an unstructured pruning modifier (<see cref="OwlAllocation"/>): <c>owl_lambda</c>,
/// λ, how far a block's sparsity may move from the target S (each block stays within [S − λ, S + λ]), and <c>owl_m</c>, M,
/// the multiple of a block's mean score above which a score counts as an outlier. The defaults are those of Yin et al.'s
/// scripts for LLaMA-7B at 70 % sparsity (λ = 0.08, M = 5); the paper tunes both per model.
/// </summary>
public sealed record OwlParameters(double Lambda, double M)
{
    public const double DefaultLambda = 0.08, DefaultM = 5;
}
