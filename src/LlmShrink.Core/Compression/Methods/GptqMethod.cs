using LlmShrink.Compression.Quantization;
using LlmShrink.Compression.Recipes;
using LlmShrink.Model;

namespace LlmShrink.Compression.Methods;

/// <summary>
/// GPTQ (Frantar et al. 2022): quantizes columns one at a time and spreads each column's error over the columns
/// not yet quantized, using the inverse Hessian of the layer's real inputs (H = 2/n Σ x xᵀ). Layers that share
/// an input (q/k/v, gate/up) share one Hessian. With <c>activations: int8</c> (8-bit symmetric per-channel weights) the
/// layer is stored W8A8: GPTQ-rounded int8 weights, activations quantized per token at run time — after a
/// <c>smoothquant</c> modifier this is llm-compressor's W8A8 recipe. A layer an earlier modifier pruned keeps its zeros.
/// </summary>
public sealed class GptqMethod(QuantScheme scheme, GptqOptions options, bool int8Activations = false) : ICompressionMethod
{
    public string Name => "gptq";
    public StatisticsNeeds Needs => StatisticsNeeds.Hessian;

    public static ICompressionMethod FromRecipe(RecipeParameters p)
    {
        var scheme = SchemeParameters.Read(p);
        var options = new GptqOptions(
            PercentDamp: p.Double("dampening", 0.01, 0, 1),
            BlockSize: p.Int("block_size", 128, 32, 64, 128, 256),
            ActOrder: p.Bool("act_order", false),
            StaticGroups: p.Bool("static_groups", false));
        bool int8 = p.String("activations", "none", "none", "int8") == "int8";
        if (int8 && !(scheme.Bits == 8 && scheme.Symmetric && scheme.Granularity == QuantGranularity.PerChannel))
            throw ShrinkException.InFile(p.Source, "modifier 'gptq': activations: int8 needs bits: 8, granularity: channel, symmetric: true (W8A8)");
        return new GptqMethod(scheme, options, int8);
    }

    public void CompressBlock(BlockCompression block)
    {
        foreach (var role in block.Targets)
        {
            var (rows, columns) = block.Shape(role);
            var q = Gptq.QuantizeConsumingHessian(block.Weights(role), rows, columns, block.HessianToConsume(role), scheme, options, cancel: block.Cancellation);
            if (!int8Activations) { block.SetQuantized(role, q); continue; }
            // Symmetric 8-bit codes sit around the zero point 128: the int8 level is code − 128, the row's grid scale its W8A8 scale.
            var levels = new sbyte[q.Codes.Length];
            for (int i = 0; i < levels.Length; i++) levels[i] = (sbyte)(q.Codes[i] - q.Zeros[i / columns]);
            block.SetW8A8(role, levels, q.Scales);
        }
    }
}
