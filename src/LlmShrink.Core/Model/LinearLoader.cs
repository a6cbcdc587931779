using System.Runtime.InteropServices;
using LlmShrink.Compression.Quantization;
using LlmShrink.Formats;

namespace LlmShrink.Model;

/// <summary>
/// Builds the runnable layer for a linear module stored in any of the layouts LlmShrink reads:
/// a dense <c>.weight</c> of any stored type; GPTQ v1 <c>.qweight/.qzeros/.scales/.g_idx</c>; or W8A8
/// <c>.weight</c> (I8) with a per-output-channel <c>.weight_scale</c>. The layout is read from the tensors
/// themselves, so a checkpoint may mix them layer by layer.
/// </summary>
public static class LinearLoader
{
    public static Linear Load(TensorSet weights, string modulePath, int outFeatures, int inFeatures, StoredTensor? bias)
    {
        if (bias is not null) TensorShapes.Expect(bias, outFeatures);
        var biasValues = bias?.ToFloatArray();
        if (weights.Find(modulePath + ".qweight") is not null)
        {
            var tensors = ReadGptq(weights, modulePath, outFeatures, inFeatures);
            return Quantized(GptqPacking.Unpack(tensors, SchemeOf(tensors)), biasValues);
        }
        var weight = weights.Get(modulePath + ".weight");
        if (weight.Type == TensorType.I8 && weights.Find(modulePath + ".weight_scale") is { } scale)
        {
            TensorShapes.Expect(weight, outFeatures, inFeatures);
            TensorShapes.Expect(scale, outFeatures, 1);
            if (scale.Type != TensorType.F32) throw ShrinkException.InFile(scale.File.Path, $"tensor '{scale.Name}' is {scale.Type}, expected F32");
            return new W8A8Linear(weight, scale.ToFloatArray(), bias: biasValues);
        }
        return Linear.FromStored(weight, bias, outFeatures, inFeatures);
    }

    /// <summary>The packed-kernel layer for a quantized matrix (the same layer whether it was just quantized or loaded).</summary>
    public static Linear Quantized(QuantizedMatrix m, float[]? bias) =>
        new GptqLinear(m.Scheme.Bits, m.Columns, m.Rows, m.Codes, m.Scales, m.Zeros, m.GroupIndex, bias);

    /// <summary>Checks a module's stored tensors have the shapes its features imply (done at load time).</summary>
    public static void Check(TensorSet weights, string modulePath, int outFeatures, int inFeatures, string source)
    {
        if (weights.Find(modulePath + ".qweight") is not null)
        {
            ReadGptqShapes(weights, modulePath, outFeatures, inFeatures);
            return;
        }
        var weight = weights.Find(modulePath + ".weight") ?? throw ShrinkException.InFile(source, $"missing tensor '{modulePath}.weight'");
        TensorShapes.Expect(weight, outFeatures, inFeatures);
    }

    /// <summary>The four GPTQ tensors of a module, their shapes checked; bits and group count follow from the shapes.</summary>
    public static GptqTensors ReadGptq(TensorSet weights, string modulePath, int outFeatures, int inFeatures)
    {
        var (bits, groups) = ReadGptqShapes(weights, modulePath, outFeatures, inFeatures);
        int[] Ints(string suffix) => MemoryMarshal.Cast<byte, int>(weights.Get(modulePath + suffix).Bytes()).ToArray();
        var scales = MemoryMarshal.Cast<byte, Half>(weights.Get(modulePath + ".scales").Bytes()).ToArray();
        return new GptqTensors(bits, inFeatures, outFeatures, groups, Ints(".qweight"), Ints(".qzeros"), scales, Ints(".g_idx"));
    }

    private static (int Bits, int Groups) ReadGptqShapes(TensorSet weights, string modulePath, int outFeatures, int inFeatures)
    {
        StoredTensor Get(string suffix, TensorType type)
        {
            var t = weights.Get(modulePath + suffix);
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
}
