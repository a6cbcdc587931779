using LlmShrink.Compression.Quantization;
using LlmShrink.Compression.Recipes;

namespace LlmShrink.Compression.Methods;

/// <summary>Round-to-nearest: each weight to its nearest grid point, no calibration data used.</summary>
public sealed class RtnMethod(QuantScheme scheme) : ICompressionMethod
{
    public string Name => "rtn";
    public StatisticsNeeds Needs => StatisticsNeeds.None;

    public static ICompressionMethod FromRecipe(RecipeParameters p) => new RtnMethod(SchemeParameters.Read(p));

    public void CompressBlock(BlockCompression block)
    {
        foreach (var role in block.Targets)
        {
            var (rows, columns) = block.Shape(role);
            block.SetQuantized(role, Rtn.Quantize(block.Weights(role), rows, columns, scheme));
        }
    }
}
