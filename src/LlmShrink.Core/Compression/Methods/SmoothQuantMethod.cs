using LlmShrink.Compression.Quantization;
using LlmShrink.Compression.Recipes;
using LlmShrink.Model;

namespace LlmShrink.Compression.Methods;

/// <summary>
/// SmoothQuant W8A8 (Xiao et al. 2023): divides the inputs of q/k/v, gate/up and lm_head by s_j = max|X_j|^α / max|W_:j|^(1−α)
/// (folded into the RMSNorm weights, the weights' columns multiplied by s) so activation outliers move into the
/// weights, then stores every targeted layer as int8 weights per output channel; activations are quantized to int8
/// per token at run time. o_proj and down_proj are quantized unsmoothed, as the reference does for Llama, unless
/// <c>smooth_all</c> also folds their scales into v_proj's and up_proj's rows. A layer that a later modifier targets too
/// is only smoothed and left to it (llm-compressor's SmoothQuantModifier before GPTQModifier with a W8A8 scheme: preset
/// <c>w8a8-smoothquant-gptq</c>, where GPTQ picks the int8 weights).
/// </summary>
public sealed class SmoothQuantMethod(double alpha, bool smoothAll) : ICompressionMethod
{
    public string Name => "smoothquant";
    public StatisticsNeeds Needs => StatisticsNeeds.ChannelMagnitudes;

    public static ICompressionMethod FromRecipe(RecipeParameters p) =>
        new SmoothQuantMethod(p.Double("alpha", 0.5, 0, 1), p.Bool("smooth_all", false));

    public void CompressBlock(BlockCompression block)
    {
        // Every fold first: smoothing down's and o's inputs changes up's and v's rows, which are then quantized.
        foreach (var site in BlockCompression.FoldOrder)
        {
            bool smoothed = BlockCompression.FollowsNorm(site) || smoothAll;
            var roles = block.Targets.Where(r => LinearRoles.Site(r) == site).ToList();
            if (!smoothed || roles.Count == 0 || !block.CanScaleInput(site)) continue;
            var statistics = block.Statistics(site);
            // Only the targeted layers become int8; other readers get the scaled columns but stay float.
            var layers = roles.Select(r => (block.Weights(r), block.Shape(r).Rows)).ToList();
            block.ScaleInputChannels(site, SmoothQuant.SmoothingScales(statistics.AbsMax, layers, statistics.Columns, alpha));
        }
        foreach (var role in block.Targets.Where(r => !block.TargetedLater.Contains(r)))
        {
            var (rows, columns) = block.Shape(role);
            var q = SmoothQuant.QuantizeRows(block.Weights(role), rows, columns);
            block.SetW8A8(role, q.Values, q.Scales);
        }
    }
}
