using System.Runtime.InteropServices;
using LlmShrink.Compression.Quantization;
using LlmShrink.Formats;
using LlmShrink.Formats.Safetensors;
using LlmShrink.Kernels;
using LlmShrink.Model;

namespace LlmShrink.Representations;

/// <summary>
/// 2:4-sparse 4-bit weights: only the two kept codes of every four consecutive inputs and their places are stored —
/// <c>sparse24_codes</c> U8 [out, in/4], <c>sparse24_positions</c> U8 [out, in/8], <c>sparse24_scales</c> F16 [groups, out],
/// <c>sparse24_zeros</c> U8 [groups, out] (layout in <see cref="Sparse24Int4Matrix"/> and docs/FORMAT.md): 3 bits per
/// weight plus the grids, against 4 for the GPTQ layout, and a decode kernel that reads only those bytes.
/// </summary>
public sealed class Sparse24Representation : LayerRepresentation
{
    public static readonly Sparse24Representation Instance = new();
    public override string Name => "sparse24-int4";
    public override IReadOnlyList<string> Suffixes { get; } = [".sparse24_codes", ".sparse24_positions", ".sparse24_scales", ".sparse24_zeros"];

    public override bool Detect(TensorSet weights, string module) => weights.Contains(module + ".sparse24_codes");

    public override int Bits(TensorSet weights, string module) => 4;

    public override (int Out, int In) Shape(TensorSet weights, string module)
    {
        var (o, i, _) = Layout(weights, module);
        return (o, i);
    }

    public override Linear Load(TensorSet weights, string module, float[]? bias) => new Sparse24Linear(Read(weights, module), bias);

    public override ScaledIntegerMatrix Integers(TensorSet weights, string module)
    {
        var m = Read(weights, module);
        return ScaledIntegerMatrix.FromGrid(Sparse24Layer.ToGrid(m), $"2:4 sparse 4-bit g{m.GroupSize}");
    }

    /// <summary>A 4-bit grouped layer (no act-order) whose mask keeps exactly 2 of every 4 inputs is stored in this form.</summary>
    public override CompressedLayer? Compact(QuantizedLayer layer, bool[]? keep)
    {
        var m = layer.Matrix;
        if (keep is null || m.Scheme.Bits != 4 || m.Scheme.Granularity != QuantGranularity.PerGroup || m.Columns % 8 != 0) return null;
        for (int c = 0; c < m.Columns; c++) if (m.GroupIndex[c] != c / m.Scheme.GroupSize) return null;
        for (int q = 0; q < keep.Length; q += 4)
            if ((keep[q] ? 1 : 0) + (keep[q + 1] ? 1 : 0) + (keep[q + 2] ? 1 : 0) + (keep[q + 3] ? 1 : 0) != 2) return null;
        var matrix = new Sparse24Int4Matrix(m.Columns, m.Rows, m.Scheme.GroupSize, m.Codes, keep, m.Scales, m.Zeros);
        return new Sparse24Layer(layer.Layer, layer.Role, matrix, layer.Bias) { Sparsity = layer.Sparsity, InputImportance = layer.InputImportance };
    }

    public static Sparse24Int4Matrix Read(TensorSet weights, string module)
    {
        var (o, i, groupSize) = Layout(weights, module);
        byte[] Bytes(string suffix) => weights.Get(module + suffix).Bytes().ToArray();
        try
        {
            return Sparse24Int4Matrix.FromTensors(i, o, groupSize, Bytes(".sparse24_codes"), Bytes(".sparse24_positions"),
                MemoryMarshal.Cast<byte, Half>(weights.Get(module + ".sparse24_scales").Bytes()), Bytes(".sparse24_zeros"));
        }
        catch (ArgumentException e) { throw ShrinkException.InFile(weights.Get(module + ".sparse24_codes").File.Path, $"module '{module}': {e.Message}"); }
    }

    /// <summary>[out, in] and group size from the tensors' shapes and types, checked.</summary>
    private static (int Out, int In, int GroupSize) Layout(TensorSet weights, string module)
    {
        StoredTensor Get(string suffix, TensorType type)
        {
            var t = weights.Get(module + suffix);
            if (t.Type != type || t.Shape.Length != 2 || t.Shape[0] is <= 0 or > int.MaxValue || t.Shape[1] is <= 0 or > int.MaxValue)
                throw ShrinkException.InFile(t.File.Path, $"tensor '{t.Name}' is {t.Type} [{string.Join(", ", t.Shape)}], expected a {type} matrix");
            return t;
        }
        var codes = Get(".sparse24_codes", TensorType.U8);
        var scales = Get(".sparse24_scales", TensorType.F16);
        int o = (int)codes.Shape[0], i = checked((int)codes.Shape[1] * 4), groups = (int)scales.Shape[0];
        if (i % groups != 0 || (i / groups) is not (32 or 64 or 128))
            throw ShrinkException.InFile(codes.File.Path, $"module '{module}': {groups} groups of {i} inputs is not a group size of 32, 64 or 128");
        TensorShapes.Expect(Get(".sparse24_positions", TensorType.U8), o, i / 8);
        TensorShapes.Expect(scales, groups, o);
        TensorShapes.Expect(Get(".sparse24_zeros", TensorType.U8), groups, o);
        return (o, i, i / groups);
    }
}

/// <summary>A 2:4-pruned, 4-bit group-quantized layer stored as its kept codes and their places.</summary>
public sealed record Sparse24Layer(int Layer, LinearRole Role, Sparse24Int4Matrix Matrix, float[]? Bias) : CompressedLayer(Layer, Role, Bias)
{
    public override LayerRepresentation Representation => Sparse24Representation.Instance;
    public override int Rows => Matrix.OutDim;
    public override int Columns => Matrix.InDim;
    public override Linear Build() => new Sparse24Linear(Matrix, Bias);

    /// <summary>Per row: a byte of codes and half a byte of places per 4 inputs; per group and row an F16 scale and a U8 zero.</summary>
    public override double StoredBits => (double)Rows * Columns * 3 + (double)Matrix.Groups * Rows * 24;

    public override float[] Dequantize() => ScaledIntegerMatrix.FromGrid(ToGrid(Matrix), Scheme).Dequantize();

    protected override string Scheme => $"4-bit g{Matrix.GroupSize}, 2:4 stored sparse";

    public override IEnumerable<SafetensorsWriter.Entry> Tensors(string module)
    {
        var t = Matrix.ToTensors();
        yield return Entries.Raw(module + ".sparse24_codes", TensorType.U8, [Rows, Columns / 4], t.Codes);
        yield return Entries.Raw(module + ".sparse24_positions", TensorType.U8, [Rows, Columns / 8], t.Positions);
        yield return Entries.Raw(module + ".sparse24_scales", TensorType.F16, [Matrix.Groups, Rows], MemoryMarshal.AsBytes(t.Scales.AsSpan()).ToArray());
        yield return Entries.Raw(module + ".sparse24_zeros", TensorType.U8, [Matrix.Groups, Rows], t.Zeros);
    }

    /// <summary>The GPTQ grid the matrix stands for (pruned weights at their group's zero code, so they are exactly 0).</summary>
    public static QuantizedMatrix ToGrid(Sparse24Int4Matrix m)
    {
        var (codes, keep) = m.Unpack();
        var t = m.ToTensors();
        var q = QuantizedMatrix.Create(m.OutDim, m.InDim, QuantScheme.Grouped(4, m.GroupSize, symmetric: false));
        for (int i = 0; i < q.Scales.Length; i++) { q.Scales[i] = (float)t.Scales[i]; q.Zeros[i] = t.Zeros[i]; }
        for (int r = 0; r < m.OutDim; r++)
            for (int c = 0; c < m.InDim; c++)
            {
                int i = r * m.InDim + c;
                q.Codes[i] = keep[i] ? codes[i] : (byte)q.Zeros[c / m.GroupSize * m.OutDim + r];
            }
        return q;
    }
}
