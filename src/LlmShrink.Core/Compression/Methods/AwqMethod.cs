using LlmShrink.Compression.Quantization;
using LlmShrink.Compression.Recipes;
using LlmShrink.Model;

namespace LlmShrink.Compression.Methods;

/// <summary>
/// AWQ (Lin et al. 2023, "AWQ: Activation-aware Weight Quantization"): per group of layers reading one input
/// (q/k/v, o, gate/up, down), scales input channel j by s_j = s_x,j^α with α searched to minimize the group's
/// quantized output error on the calibration inputs, folds 1/s into the input's producer, clips each weight group
/// to the range with the least output error, and quantizes round-to-nearest. Clipping is not searched for q and k,
/// whose errors the attention softmax amplifies (as llm-awq's auto_clip skips them). With grouped-query attention
/// o_proj cannot be scaled (see <see cref="BlockCompression.CanScaleInput"/>) and is only clipped. Layers a later
/// modifier targets too are scaled and clipped but left float for it (e.g. <c>awq</c> then <c>gptq</c>, as llm-compressor's
/// AWQModifier before GPTQModifier).
/// </summary>
public sealed class AwqMethod(QuantScheme scheme, AwqOptions options) : ICompressionMethod
{
    public string Name => "awq";
    public StatisticsNeeds Needs => StatisticsNeeds.Samples;

    public static ICompressionMethod FromRecipe(RecipeParameters p)
    {
        var scheme = SchemeParameters.Read(p);
        int grid = p.Int("grid", 20);
        int clipTokens = p.Int("clip_tokens", 512);
        if (grid is < 1 or > 1000) throw ShrinkException.InFile(p.Source, $"modifier 'awq': grid: {grid} is outside [1, 1000]");
        if (clipTokens < 1) throw ShrinkException.InFile(p.Source, $"modifier 'awq': clip_tokens: must be positive, not {clipTokens}");
        return new AwqMethod(scheme, new AwqOptions(grid, p.Double("max_shrink", 0.5, 0, 0.95), clipTokens));
    }

    public void CompressBlock(BlockCompression block)
    {
        // Down's and o's scales fold into up's and v's rows, so those groups go first (see FoldOrder).
        foreach (var site in BlockCompression.FoldOrder)
        {
            var roles = block.Targets.Where(r => LinearRoles.Site(r) == site).ToList();
            if (roles.Count == 0) continue;
            var statistics = block.Statistics(site);
            var x = statistics.Samples();
            int tokens = statistics.SampleTokens, columns = statistics.Columns;
            if (block.CanScaleInput(site))
            {
                var layers = roles.Select(r => new AwqLayer(block.Weights(r), block.Shape(r).Rows,
                    SearchClipping: r is not (LinearRole.Q or LinearRole.K))).ToList();
                var result = Awq.QuantizeGroup(layers, x, tokens, columns, scheme, options);
                block.ScaleInputChannels(site, result.Scales); // the samples x are rescaled with the statistics
                for (int i = 0; i < roles.Count; i++)
                    if (block.TargetedLater.Contains(roles[i])) Clip(block, roles[i], x, tokens, columns);
                    else block.SetQuantized(roles[i], result.Quantized[i]);
                continue;
            }
            foreach (var role in roles)
                if (block.TargetedLater.Contains(role)) Clip(block, role, x, tokens, columns);
                else block.SetQuantized(role, ClipAndQuantize(block, role, x, tokens, columns));
        }
    }

    /// <summary>Clips the layer's weights in place to the ranges with the least quantized output error (not q/k: see above), for a later quantizer.</summary>
    private void Clip(BlockCompression block, LinearRole role, float[] x, int tokens, int columns)
    {
        if (role is LinearRole.Q or LinearRole.K) return;
        var w = block.Weights(role);
        int rows = block.Shape(role).Rows;
        Awq.Clip(w, rows, columns, Awq.SearchClipping(w, rows, columns, x, tokens, scheme, options), scheme);
        block.MarkRescaled(role);
    }

    /// <summary>Clips a copy (the report measures the error against the unclipped weights) and rounds it.</summary>
    private QuantizedMatrix ClipAndQuantize(BlockCompression block, LinearRole role, float[] x, int tokens, int columns)
    {
        var w = (float[])block.Weights(role).Clone();
        int rows = block.Shape(role).Rows;
        Awq.Clip(w, rows, columns, Awq.SearchClipping(w, rows, columns, x, tokens, scheme, options), scheme);
        return Rtn.Quantize(w, rows, columns, scheme);
    }
}
