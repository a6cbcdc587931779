using LlmShrink.Compression.Recipes;
using LlmShrink.Formats;
using LlmShrink.Model;

namespace LlmShrink.Compression.Methods;

/// <summary>
/// Quantizes each targeted layer to a llama.cpp block type (<c>type: Q4_K</c>; any type <see cref="GgmlQuantizers.CanEncode"/>
/// accepts), row by row with <see cref="GgmlQuantizers.Quantize"/> weighted by the layer's input importance — the per
/// input column mean x² of its calibration inputs, what llama-quantize reads from an imatrix file — so the layer is
/// measured (output error, exact bytes) as llama.cpp will run it, and the GGUF export carries the same blocks over unchanged.
/// </summary>
public sealed class GgmlTypeMethod(TensorType type) : ICompressionMethod
{
    public string Name => "ggml";
    public StatisticsNeeds Needs => StatisticsNeeds.None; // per-channel Σx² (the importance) is always gathered

    public static ICompressionMethod FromRecipe(RecipeParameters p)
    {
        var encodable = Enum.GetValues<TensorType>().Where(GgmlQuantizers.CanEncode).ToList();
        string text = p.String("type", "");
        if (text.Length == 0) throw ShrinkException.InFile(p.Source, $"modifier '{p.Modifier}': type: required (one of {string.Join(", ", encodable)})");
        // Names only: Enum.TryParse would also take a number ("12") for whatever type that index happens to be.
        var chosen = encodable.Where(t => string.Equals(t.ToString(), text, StringComparison.OrdinalIgnoreCase)).ToList();
        if (chosen.Count == 0) throw ShrinkException.InFile(p.Source, $"modifier '{p.Modifier}': type: '{text}' is not a ggml block type LlmShrink can encode ({string.Join(", ", encodable)})");
        return new GgmlTypeMethod(chosen[0]);
    }

    public void CompressBlock(BlockCompression block)
    {
        int blockElements = TensorTypes.BlockElements(type);
        foreach (var role in block.Targets)
        {
            var (rows, columns) = block.Shape(role);
            if (columns % blockElements != 0)
                throw new ShrinkException($"ggml {type}: {LinearRoles.ModulePath(block.Layer, role)} has {columns} inputs, not a multiple of the {type} block size {blockElements}");
            var importance = block.Statistics(LinearRoles.Site(role)).SquareMean();
            var w = block.Weights(role);
            int rowBytes = checked((int)TensorTypes.ByteCount(type, columns));
            var blocks = new byte[(long)rows * rowBytes];
            // A pruned layer's weights are 0 where its mask prunes; the context checks they decode to exactly 0 again.
            Parallel.For(0, rows, r => GgmlQuantizers.Quantize(type, w.AsSpan(r * columns, columns), blocks.AsSpan(r * rowBytes, rowBytes), importance));
            block.SetGgml(role, type, blocks);
        }
    }
}
