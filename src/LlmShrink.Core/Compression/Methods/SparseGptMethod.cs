using LlmShrink.Compression.Pruning;
using LlmShrink.Compression.Quantization;
using LlmShrink.Compression.Recipes;

namespace LlmShrink.Compression.Methods;

/// <summary>
/// SparseGPT (Frantar &amp; Alistarh 2023): GPTQ's Hessian picks the mask (w²/[H⁻¹]²_jj per 128-column block) and updates
/// the kept weights to absorb the pruned ones' error. With <c>bits</c> the kept weights are also quantized in the same
/// pass (the paper's joint sparsity + quantization; GPTQ layout, pruned weights at the zero code); without, the layer
/// stays float for a later modifier or is stored in the checkpoint's float type.
/// </summary>
public sealed class SparseGptMethod(PruningParameters pruning, QuantScheme? scheme, SparseGptOptions options) : ICompressionMethod
{
    public string Name => "sparsegpt";
    public StatisticsNeeds Needs => StatisticsNeeds.Hessian;

    public static ICompressionMethod FromRecipe(RecipeParameters p)
    {
        var pruning = PruningParameters.Read(p);
        var scheme = p.Has("bits") ? SchemeParameters.Read(p) : null;
        var options = new SparseGptOptions(p.Double("dampening", 0.01, 0, 1), p.Int("block_size", 128, 32, 64, 128, 256));
        return new SparseGptMethod(pruning, scheme, options);
    }

    /// <summary>With <c>allocation: owl</c>, the per-block sparsities this run's survey chose (null before the survey, and for uniform pruning).</summary>
    public OwlAllocation? Owl { get; private set; }

    public bool SurveysModel => pruning.Owl is not null;

    public void Survey(ModelSurvey survey) => Owl = OwlAllocation.Measure(survey, pruning);

    public void CompressBlock(BlockCompression block)
    {
        var (sparsity, described) = pruning.At(block.Layer, Owl, Name);
        foreach (var role in block.Targets)
        {
            var (rows, columns) = block.Shape(role);
            var result = SparseGpt.PruneConsumingHessian(block.Weights(role), rows, columns, block.HessianToConsume(role),
                pruning.Pattern, sparsity, scheme, options, block.Cancellation);
            if (result.Quantized is { } q) block.SetQuantized(role, q, (result.Keep, described));
            else block.SetPruned(role, result.Weights, result.Keep, described);
        }
    }
}
