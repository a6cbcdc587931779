using LlmShrink.Compression.Quantization;
using LlmShrink.Compression.Recipes;

namespace LlmShrink.Compression.Methods;

/// <summary>The weight-quantization scheme keys shared by RTN, GPTQ and AWQ recipes: bits, group_size, granularity, symmetric.</summary>
internal static class SchemeParameters
{
    public static QuantScheme Read(RecipeParameters p, int defaultBits = 4)
    {
        int bits = p.Int("bits", defaultBits, 2, 3, 4, 8);
        int groupSize = p.Int("group_size", 128, 32, 64, 128);
        var granularity = p.String("granularity", "group", "tensor", "channel", "group") switch
        {
            "tensor" => QuantGranularity.PerTensor,
            "channel" => QuantGranularity.PerChannel,
            _ => QuantGranularity.PerGroup,
        };
        bool symmetric = p.Bool("symmetric", true);
        return new QuantScheme(bits, symmetric, granularity, granularity == QuantGranularity.PerGroup ? groupSize : 0);
    }
}
