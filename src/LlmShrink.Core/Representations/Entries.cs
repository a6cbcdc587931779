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

    /// <summary>Float values [rows, columns] stored as <paramref name="type"/> (F32, F16 or BF16), encoded one row at a time as the file is written.</summary>
    public static SafetensorsWriter.Entry Encoded(string name, TensorType type, float[] values, int rows, int columns) =>
        new(name, type, [rows, columns], stream =>
        {
            if (type == TensorType.F32) { stream.Write(MemoryMarshal.AsBytes(values.AsSpan())); return; }
            var bytes = new byte[TensorTypes.ByteCount(type, columns)];
            for (int r = 0; r < rows; r++)
            {
                TensorEncoding.EncodeRow(type, values.AsSpan(r * columns, columns), bytes);
                stream.Write(bytes);
            }
        });

    public static SafetensorsWriter.Entry Raw(string name, TensorType type, long[] shape, byte[] bytes) =>
        new(name, type, shape, stream => stream.Write(bytes));
}
