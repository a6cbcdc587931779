using LlmShrink.Compression.Quantization;
using LlmShrink.Compression.Recipes;

namespace LlmShrink.Compression.Methods;

/// <summary>
/// GPTQ (Frantar et al. 2022): quantizes columns one at a time and spreads each column's error over the columns
/// not yet quantized, using the inverse Hessian of the layer's real inputs (H = 2/n Σ x xᵀ). Layers that share
/// an input (q/k/v, gate/up) share one Hessian.
/// </summary>
public sealed class GptqMethod(QuantScheme scheme, GptqOptions options) : ICompressionMethod
{
    public string Name => "gptq";
    public StatisticsNeeds Needs => StatisticsNeeds.Hessian;

    public static ICompressionMethod FromRecipe(RecipeParameters p) => new GptqMethod(SchemeParameters.Read(p), new GptqOptions(
        PercentDamp: p.Double("dampening", 0.01, 0, 1),
        BlockSize: p.Int("block_size", 128, 32, 64, 128, 256),
        ActOrder: p.Bool("act_order", false),
        StaticGroups: p.Bool("static_groups", false)));

    public void CompressBlock(BlockCompression block)
    {
        foreach (var role in block.Targets)
        {
            var (rows, columns) = block.Shape(role);
            var hessian = block.Statistics(LinearRoles.Site(role)).Hessian();
            block.SetQuantized(role, Gptq.Quantize(block.Weights(role), rows, columns, hessian, scheme, options));
        }
    }
}
