using LlmShrink.Compression.Quantization;
using LlmShrink.Compression.Recipes;
using LlmShrink.Model;

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
            var site = LinearRoles.Site(role);
            // The last layer of the block reading this input factors H in place (down_proj's is ~1 GB); the others copy it.
            bool last = BlockCompression.Readers(site).All(r => r == role || block.IsCompressed(r));
            var statistics = block.Statistics(site);
            block.SetQuantized(role, last
                ? Gptq.QuantizeConsumingHessian(block.Weights(role), rows, columns, statistics.TakeHessian(), scheme, options)
                : Gptq.Quantize(block.Weights(role), rows, columns, statistics.Hessian(), scheme, options));
        }
    }
}
