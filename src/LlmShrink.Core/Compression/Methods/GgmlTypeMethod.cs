using LlmShrink.Compression.Quantization;
using LlmShrink.Compression.Recipes;
using LlmShrink.Formats;
using LlmShrink.Model;

namespace LlmShrink.Compression.Methods;

/// <summary>How the <c>ggml</c> method chooses each weight's level.</summary>
public enum GgmlRounding
{
    /// <summary>llama.cpp's own quantizer with the importance (llama-quantize with an imatrix): each weight to the nearest level.</summary>
    Nearest,
    /// <summary>GPTQ's walk with the block type as its grid (<see cref="GgmlGptq"/>): each rounding error spread over the inputs not yet rounded.</summary>
    Gptq,
}

/// <summary>
/// Quantizes each targeted layer to a llama.cpp block type (<c>type: Q4_K</c>; any type <see cref="GgmlQuantizers.CanEncode"/>
/// accepts), so the layer is measured (output error, exact bytes) as llama.cpp will run it, and the GGUF export carries the
/// same blocks over unchanged. <c>rounding: nearest</c> (the default) encodes row by row with
/// <see cref="GgmlQuantizers.Quantize"/> weighted by the layer's input importance — the per input column mean x² of its
/// calibration inputs, what llama-quantize reads from an imatrix file. <c>rounding: gptq</c> fits the same blocks but
/// chooses their levels by GPTQ's error-feedback walk over the layer's Hessian (<see cref="GgmlGptq"/>): same type, same
/// bytes per row, lower output error. It is a rounding of this method rather than a <c>gptq</c> parameter because the
/// block type fixes what gptq's <c>bits</c>, <c>group_size</c> and <c>symmetric</c> would describe, and the layer is stored
/// as ggml blocks either way. <paramref name="source"/> is where the recipe states the modifier: a layer whose inputs are not
/// whole blocks is only found when the block is reached, and the error names the modifier there.
/// </summary>
public sealed class GgmlTypeMethod(TensorType type, GgmlRounding rounding, string source) : ICompressionMethod
{
    public string Name => "ggml";
    // Per-channel Σx² (the importance) is always gathered; GPTQ's walk also needs the full Hessian.
    public StatisticsNeeds Needs => rounding == GgmlRounding.Gptq ? StatisticsNeeds.Hessian : StatisticsNeeds.None;

    public static ICompressionMethod FromRecipe(RecipeParameters p)
    {
        var encodable = Enum.GetValues<TensorType>().Where(GgmlQuantizers.CanEncode).ToList();
        string text = p.String("type", "");
        if (text.Length == 0) throw ShrinkException.InFile(p.Source, $"modifier '{p.Modifier}': type: required (one of {string.Join(", ", encodable)})");
        // Names only: Enum.TryParse would also take a number ("12") for whatever type that index happens to be.
        var chosen = encodable.Where(t => string.Equals(t.ToString(), text, StringComparison.OrdinalIgnoreCase)).ToList();
        if (chosen.Count == 0) throw ShrinkException.InFile(p.Source, $"modifier '{p.Modifier}': type: '{text}' is not a ggml block type LlmShrink can encode ({string.Join(", ", encodable)})");
        var rounding = p.String("rounding", "nearest", "nearest", "gptq") == "gptq" ? GgmlRounding.Gptq : GgmlRounding.Nearest;
        return new GgmlTypeMethod(chosen[0], rounding, p.Source);
    }

    public void CompressBlock(BlockCompression block)
    {
        int blockElements = TensorTypes.BlockElements(type);
        foreach (var role in block.Targets)
        {
            var (rows, columns) = block.Shape(role);
            if (columns % blockElements != 0)
                throw ShrinkException.InFile(source, $"modifier 'ggml': {LinearRoles.ModulePath(block.Layer, role)} has {columns} inputs, not a multiple of the {type} block size {blockElements}");
            var importance = block.Statistics(LinearRoles.Site(role)).SquareMean();
            var w = block.Weights(role);
            byte[] blocks;
            if (rounding == GgmlRounding.Gptq)
                blocks = GgmlGptq.QuantizeConsumingHessian(w, rows, columns, block.HessianToConsume(role), type, importance, block.Mask(role)).Blocks;
            else
            {
                int rowBytes = checked((int)TensorTypes.ByteCount(type, columns));
                blocks = new byte[(long)rows * rowBytes];
                Parallel.For(0, rows, r => GgmlQuantizers.Quantize(type, w.AsSpan(r * columns, columns), blocks.AsSpan(r * rowBytes, rowBytes), importance));
            }
            // A pruned layer's weights are 0 where its mask prunes; the context checks they decode to exactly 0 again.
            block.SetGgml(role, type, blocks);
        }
    }
}
