using System.Runtime.InteropServices;
using LlmShrink.Compression.Quantization;
using LlmShrink.Formats;

namespace LlmShrink.Representations;

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

    /// <summary>A GPTQ grid's codes, zero points and scales.</summary>
    public static ScaledIntegerMatrix FromGrid(QuantizedMatrix m, string description) => new(m, description);

    /// <summary>int8 levels [rows, columns] with one scale per row (W8A8).</summary>
    public static ScaledIntegerMatrix FromRows(sbyte[] q, float[] rowScales, int rows, int columns) => new(q, rowScales, rows, columns);

    /// <summary>A compressed module as stored in <paramref name="weights"/>; a module stored as plain floats is a one-line error.</summary>
    public static ScaledIntegerMatrix Read(TensorSet weights, string modulePath) =>
        Read(LayerRepresentations.Of(weights, modulePath, modulePath), weights, modulePath);

    /// <summary>The module as stored in <paramref name="representation"/> (e.g. a compensated module's base).</summary>
    public static ScaledIntegerMatrix Read(LayerRepresentation representation, TensorSet weights, string modulePath) =>
        representation.Integers(weights, modulePath)
            ?? throw new ShrinkException($"module '{modulePath}' is stored as {representation.Name}, not as integers with scales");

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
}
