using System.Runtime.InteropServices;
using LlmShrink.Compression.Quantization;
using LlmShrink.Formats;
using LlmShrink.Model;

namespace LlmShrink.Export;

/// <summary>
/// A compressed linear module [out, in] as the integers the compression method chose: every weight is a scale times a
/// small integer level. Both layouts LlmShrink writes have that form —
///   GPTQ  w[r, c] = scales[g(c), r] · (code[r, c] − zero[g(c), r]),  g = g_idx
///   W8A8  w[r, c] = weight_scale[r] · q[r, c]
/// — which is what lets an export re-express the same numbers in another format's blocks.
/// </summary>
public sealed class ScaledIntegerMatrix
{
    private readonly QuantizedMatrix? _gptq;
    private readonly sbyte[]? _int8;
    private readonly float[]? _rowScales;

    public int Rows { get; }
    public int Columns { get; }
    /// <summary>Bits the method stored per weight (8 for W8A8).</summary>
    public int Bits { get; }
    /// <summary>How the module was stored, e.g. "GPTQ 4-bit g32 sym", "GPTQ 4-bit g128 asym act-order", "W8A8".</summary>
    public string Description { get; }

    private ScaledIntegerMatrix(QuantizedMatrix m, string description)
    {
        _gptq = m;
        (Rows, Columns, Bits, Description) = (m.Rows, m.Columns, m.Scheme.Bits, description);
    }

    private ScaledIntegerMatrix(sbyte[] q, float[] rowScales, int rows, int columns)
    {
        _int8 = q;
        _rowScales = rowScales;
        (Rows, Columns, Bits, Description) = (rows, columns, 8, "W8A8");
    }

    /// <summary>True when <paramref name="modulePath"/> (e.g. "model.layers.0.self_attn.q_proj") is stored GPTQ-packed or W8A8.</summary>
    public static bool IsCompressed(TensorSet weights, string modulePath) =>
        weights.Contains(modulePath + ".qweight") ||
        (weights.Find(modulePath + ".weight") is { Type: TensorType.I8 } && weights.Contains(modulePath + ".weight_scale"));

    /// <summary>[out, in] and bits of a compressed module from its tensors' shapes, without unpacking it (checked when read).</summary>
    public static (int OutFeatures, int InFeatures, int Bits) Shape(TensorSet weights, string modulePath)
    {
        if (weights.Find(modulePath + ".qweight") is { } qweight)
        {
            var gIdx = weights.Get(modulePath + ".g_idx");
            if (qweight.Shape.Length != 2 || gIdx.Shape.Length != 1 || qweight.Shape[1] is <= 0 or > int.MaxValue || gIdx.Shape[0] is <= 0 or > int.MaxValue)
                throw ShrinkException.InFile(qweight.File.Path, $"module '{modulePath}': qweight/g_idx are not [in·bits/32, out] / [in]");
            int outFeatures = (int)qweight.Shape[1], inFeatures = (int)gIdx.Shape[0];
            LinearLoader.Check(weights, modulePath, outFeatures, inFeatures, qweight.File.Path);
            return (outFeatures, inFeatures, (int)(qweight.Shape[0] * 32 / inFeatures));
        }
        var weight = weights.Get(modulePath + ".weight");
        if (weight.Shape.Length != 2 || weight.Shape[0] > int.MaxValue || weight.Shape[1] > int.MaxValue)
            throw ShrinkException.InFile(weight.File.Path, $"tensor '{weight.Name}' is not a matrix");
        return ((int)weight.Shape[0], (int)weight.Shape[1], 8);
    }

    /// <summary>Reads a compressed module; its [out, in] shape comes from the tensors and is checked against them.</summary>
    public static ScaledIntegerMatrix Read(TensorSet weights, string modulePath)
    {
        if (weights.Contains(modulePath + ".qweight"))
        {
            var (outFeatures, inFeatures, _) = Shape(weights, modulePath);
            var tensors = LinearLoader.ReadGptq(weights, modulePath, outFeatures, inFeatures);
            var m = GptqPacking.Unpack(tensors, LinearLoader.SchemeOf(tensors));
            return new ScaledIntegerMatrix(m, Describe(m));
        }
        var weight = weights.Get(modulePath + ".weight");
        var scale = weights.Get(modulePath + ".weight_scale");
        if (weight.Type != TensorType.I8 || weight.Shape.Length != 2 || scale.Type != TensorType.F32)
            throw ShrinkException.InFile(weight.File.Path, $"module '{modulePath}' is neither GPTQ-packed nor W8A8 (I8 weight, F32 weight_scale)");
        TensorShapes.Expect(scale, weight.Shape[0], 1);
        return new ScaledIntegerMatrix(MemoryMarshal.Cast<byte, sbyte>(weight.Bytes()).ToArray(), scale.ToFloatArray(),
            checked((int)weight.Shape[0]), checked((int)weight.Shape[1]));
    }

    /// <summary>Row <paramref name="row"/> as each column's scale and integer level (weight = scale · level).</summary>
    public void Row(int row, Span<float> scale, Span<int> level)
    {
        if (_gptq is { } m)
        {
            int start = row * Columns;
            for (int c = 0; c < Columns; c++)
            {
                int g = m.GroupIndex[c] * Rows + row;
                scale[c] = m.Scales[g];
                level[c] = m.Codes[start + c] - m.Zeros[g];
            }
            return;
        }
        scale[..Columns].Fill(_rowScales![row]);
        for (int c = 0; c < Columns; c++) level[c] = _int8![row * Columns + c];
    }

    /// <summary>The weights as the compressed model computes them, row-major [Rows, Columns].</summary>
    public float[] Dequantize()
    {
        var w = new float[(long)Rows * Columns];
        var scale = new float[Columns];
        var level = new int[Columns];
        for (int r = 0; r < Rows; r++)
        {
            Row(r, scale, level);
            for (int c = 0; c < Columns; c++) w[(long)r * Columns + c] = scale[c] * level[c];
        }
        return w;
    }

    /// <summary>"GPTQ 4-bit g32 sym": bits, group width (in / groups), symmetric when every zero is 2^(bits−1), act-order when g_idx is not c / width.</summary>
    private static string Describe(QuantizedMatrix m)
    {
        int width = (m.Columns + m.GroupCount - 1) / m.GroupCount;
        bool symmetric = m.Zeros.All(z => z == 1 << (m.Scheme.Bits - 1));
        bool actOrder = m.GroupIndex.Where((g, c) => g != c / width).Any();
        return $"GPTQ {m.Scheme.Bits}-bit {(m.GroupCount == 1 ? "per-channel" : $"g{width}")} {(symmetric ? "sym" : "asym")}{(actOrder ? " act-order" : "")}";
    }
}
