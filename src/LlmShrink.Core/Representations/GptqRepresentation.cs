using System.Runtime.InteropServices;
using LlmShrink.Compression.Quantization;
using LlmShrink.Formats;
using LlmShrink.Formats.Safetensors;
using LlmShrink.Model;

namespace LlmShrink.Representations;

/// <summary>
/// GPTQ v1 packing (<c>qweight</c> I32 [in·bits/32, out], <c>qzeros</c> I32 [groups, out·bits/32], <c>scales</c> F16
/// [groups, out], <c>g_idx</c> I32 [in]), as AutoGPTQ/GPTQModel write it and transformers/vLLM load it; bits and group
/// count follow from the shapes. Runs on the packed int kernels (<see cref="GptqLinear"/>). See docs/FORMAT.md.
/// </summary>
public sealed class GptqRepresentation : LayerRepresentation
{
    public static readonly GptqRepresentation Instance = new();
    public override string Name => "gptq";
    public override IReadOnlyList<string> Suffixes { get; } = [".qweight", ".qzeros", ".scales", ".g_idx"];

    public override bool Detect(TensorSet weights, string module) => weights.Contains(module + ".qweight");

    public override (int Out, int In) Shape(TensorSet weights, string module)
    {
        var qweight = weights.Get(module + ".qweight");
        var gIdx = weights.Get(module + ".g_idx");
        if (qweight.Shape.Length != 2 || gIdx.Shape.Length != 1 || qweight.Shape[1] is <= 0 or > int.MaxValue || gIdx.Shape[0] is <= 0 or > int.MaxValue)
            throw ShrinkException.InFile(qweight.File.Path, $"module '{module}': qweight/g_idx are not [in·bits/32, out] / [in]");
        int outFeatures = (int)qweight.Shape[1], inFeatures = (int)gIdx.Shape[0];
        CheckedLayout(weights, module, outFeatures, inFeatures);
        return (outFeatures, inFeatures);
    }

    public override int Bits(TensorSet weights, string module)
    {
        var (outFeatures, inFeatures) = Shape(weights, module);
        return CheckedLayout(weights, module, outFeatures, inFeatures).Bits;
    }

    public override Linear Load(TensorSet weights, string module, float[]? bias) => Build(Read(weights, module), bias);

    public override ScaledIntegerMatrix Integers(TensorSet weights, string module)
    {
        var m = Read(weights, module);
        return ScaledIntegerMatrix.FromGrid(m, Describe(m));
    }

    /// <summary>The packed-kernel layer for a quantized matrix (the same layer whether it was just quantized or loaded).</summary>
    public static Linear Build(QuantizedMatrix m, float[]? bias) =>
        new GptqLinear(m.Scheme.Bits, m.Columns, m.Rows, m.Codes, m.Scales, m.Zeros, m.GroupIndex, bias);

    /// <summary>A module's codes, grids and g_idx, unpacked.</summary>
    public static QuantizedMatrix Read(TensorSet weights, string module)
    {
        var (outFeatures, inFeatures) = Instance.Shape(weights, module);
        var tensors = ReadPacked(weights, module, outFeatures, inFeatures);
        return GptqPacking.Unpack(tensors, SchemeOf(tensors));
    }

    /// <summary>The four packed tensors of a module, their shapes checked.</summary>
    public static GptqTensors ReadPacked(TensorSet weights, string module, int outFeatures, int inFeatures)
    {
        var (bits, groups) = CheckedLayout(weights, module, outFeatures, inFeatures);
        int[] Ints(string suffix) => MemoryMarshal.Cast<byte, int>(weights.Get(module + suffix).Bytes()).ToArray();
        var scales = MemoryMarshal.Cast<byte, Half>(weights.Get(module + ".scales").Bytes()).ToArray();
        return new GptqTensors(bits, inFeatures, outFeatures, groups, Ints(".qweight"), Ints(".qzeros"), scales, Ints(".g_idx"));
    }

    private static (int Bits, int Groups) CheckedLayout(TensorSet weights, string module, int outFeatures, int inFeatures)
    {
        StoredTensor Get(string suffix, TensorType type)
        {
            var t = weights.Get(module + suffix);
            if (t.Type != type) throw ShrinkException.InFile(t.File.Path, $"tensor '{t.Name}' is {t.Type}, GPTQ stores it as {type}");
            return t;
        }
        var qweight = Get(".qweight", TensorType.I32);
        var scales = Get(".scales", TensorType.F16);
        var qzeros = Get(".qzeros", TensorType.I32);
        var gIdx = Get(".g_idx", TensorType.I32);
        string path = qweight.File.Path;
        if (qweight.Shape.Length != 2 || qweight.Shape[1] != outFeatures || qweight.Shape[0] * 32 % inFeatures != 0)
            throw ShrinkException.InFile(path, $"tensor '{qweight.Name}' has shape [{string.Join(", ", qweight.Shape)}], not [in·bits/32, {outFeatures}] for in = {inFeatures}");
        int bits = checked((int)(qweight.Shape[0] * 32 / inFeatures));
        if (bits is not (2 or 3 or 4 or 8)) throw ShrinkException.InFile(path, $"tensor '{qweight.Name}' implies {bits}-bit weights; GPTQ supports 2, 3, 4 and 8");
        if (scales.Shape.Length != 2 || scales.Shape[1] != outFeatures || scales.Shape[0] < 1 || scales.Shape[0] > inFeatures)
            throw ShrinkException.InFile(path, $"tensor '{scales.Name}' has shape [{string.Join(", ", scales.Shape)}], not [groups, {outFeatures}]");
        int groups = (int)scales.Shape[0];
        TensorShapes.Expect(qzeros, groups, outFeatures * bits / 32);
        TensorShapes.Expect(gIdx, inFeatures);
        return (bits, groups);
    }

    /// <summary>The scheme a packed layer implies; group width is in/groups (act_order keeps that count of groups).</summary>
    public static QuantScheme SchemeOf(GptqTensors t)
    {
        int width = (t.InFeatures + t.GroupCount - 1) / t.GroupCount;
        if (t.GroupCount == 1) return new QuantScheme(t.Bits, symmetric: false, QuantGranularity.PerChannel);
        if (width is 32 or 64 or 128) return QuantScheme.Grouped(t.Bits, width, symmetric: false);
        throw new ShrinkException($"GPTQ layer with {t.InFeatures} inputs in {t.GroupCount} groups: group size {width} is not supported (32, 64, 128 or one group)");
    }

    /// <summary>Input columns per group as the checkpoint states it (in / groups), −1 for one group per row.</summary>
    public static int GroupSize(QuantizedMatrix m) => m.GroupCount == 1 ? -1 : (m.Columns + m.GroupCount - 1) / m.GroupCount;

    /// <summary>Symmetric when every zero point is 2^(bits−1) (what GPTQ's "sym" means for the stored grid).</summary>
    public static bool IsSymmetric(QuantizedMatrix m) => m.Zeros.All(z => z == 1 << (m.Scheme.Bits - 1));

    /// <summary>act_order: g_idx is not the identity grouping c / width.</summary>
    public static bool IsActOrder(QuantizedMatrix m)
    {
        int width = (m.Columns + m.GroupCount - 1) / m.GroupCount;
        return m.GroupIndex.Where((g, c) => g != c / width).Any();
    }

    /// <summary>"GPTQ 4-bit g32 sym", "GPTQ 4-bit g128 asym act-order", "GPTQ 8-bit per-channel sym".</summary>
    public static string Describe(QuantizedMatrix m) =>
        $"GPTQ {m.Scheme.Bits}-bit {(m.GroupCount == 1 ? "per-channel" : $"g{GroupSize(m)}")} {(IsSymmetric(m) ? "sym" : "asym")}{(IsActOrder(m) ? " act-order" : "")}";

    /// <summary>The four GPTQ v1 tensors of <paramref name="m"/> under <paramref name="module"/> (qweight, qzeros, scales, g_idx).</summary>
    public static IEnumerable<SafetensorsWriter.Entry> Tensors(string module, QuantizedMatrix m)
    {
        var packed = GptqPacking.Pack(m);
        yield return Entries.Ints(module + ".qweight", packed.QWeight, [packed.QWeight.Length / packed.OutFeatures, packed.OutFeatures]);
        yield return Entries.Ints(module + ".qzeros", packed.QZeros, [packed.GroupCount, packed.QZeros.Length / packed.GroupCount]);
        yield return Entries.Raw(module + ".scales", TensorType.F16, [packed.GroupCount, packed.OutFeatures], MemoryMarshal.AsBytes(packed.Scales.AsSpan()).ToArray());
        yield return Entries.Ints(module + ".g_idx", packed.GIdx, [packed.InFeatures]);
    }
}

/// <summary>A weight-only group-quantized layer (RTN, GPTQ, AWQ), stored in the GPTQ layout.</summary>
public sealed record QuantizedLayer(int Layer, LinearRole Role, QuantizedMatrix Matrix, float[]? Bias) : CompressedLayer(Layer, Role, Bias)
{
    public override LayerRepresentation Representation => GptqRepresentation.Instance;
    public override int Rows => Matrix.Rows;
    public override int Columns => Matrix.Columns;
    public override Linear Build() => GptqRepresentation.Build(Matrix, Bias);

    /// <summary>Codes + one F16 scale and one packed zero per group and row, as the GPTQ layout stores them (g_idx not counted).</summary>
    public override double StoredBits => (double)Matrix.Rows * Matrix.Columns * Matrix.Scheme.Bits + (double)Matrix.GroupCount * Matrix.Rows * (16 + Matrix.Scheme.Bits);

    public override float[] Dequantize() => ScaledIntegerMatrix.FromGrid(Matrix, Scheme).Dequantize();

    protected override string Scheme => Matrix.Scheme.ToString();

    public override IEnumerable<SafetensorsWriter.Entry> Tensors(string module) => GptqRepresentation.Tensors(module, Matrix);
}
