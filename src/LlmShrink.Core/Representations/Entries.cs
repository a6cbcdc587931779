using System.Runtime.InteropServices;
using LlmShrink.Formats;
using LlmShrink.Formats.Safetensors;

namespace LlmShrink.Representations;

/// <summary>Safetensors entries over arrays held in memory.</summary>
public static class Entries
{
    public static SafetensorsWriter.Entry Floats(string name, float[] values, long[]? shape = null) =>
        Raw(name, TensorType.F32, shape ?? [values.Length], MemoryMarshal.AsBytes(values.AsSpan()).ToArray());

    public static SafetensorsWriter.Entry Ints(string name, int[] values, long[] shape) =>
        Raw(name, TensorType.I32, shape, MemoryMarshal.AsBytes(values.AsSpan()).ToArray());

    public static SafetensorsWriter.Entry Raw(string name, TensorType type, long[] shape, byte[] bytes) =>
        new(name, type, shape, stream => stream.Write(bytes));
}
