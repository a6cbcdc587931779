using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace LlmShrink.Formats;

/// <summary>Turns a row of stored elements of any <see cref="TensorType"/> into float32.</summary>
public static class TensorDecoding
{
    public static void DecodeRow(TensorType type, ReadOnlySpan<byte> src, Span<float> dst)
    {
        switch (type)
        {
            case TensorType.F32:
                MemoryMarshal.Cast<byte, float>(src)[..dst.Length].CopyTo(dst);
                break;
            case TensorType.F16:
                {
                    var halves = MemoryMarshal.Cast<byte, Half>(src);
                    System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(halves[..dst.Length], dst);
                    break;
                }
            case TensorType.BF16:
                {
                    var bits = MemoryMarshal.Cast<byte, ushort>(src);
                    for (int i = 0; i < dst.Length; i++) dst[i] = BFloat16ToSingle(bits[i]);
                    break;
                }
            case TensorType.F64:
                for (int i = 0; i < dst.Length; i++) dst[i] = (float)BinaryPrimitives.ReadDoubleLittleEndian(src[(8 * i)..]);
                break;
            case TensorType.I8:
                for (int i = 0; i < dst.Length; i++) dst[i] = (sbyte)src[i];
                break;
            case TensorType.I16:
                for (int i = 0; i < dst.Length; i++) dst[i] = BinaryPrimitives.ReadInt16LittleEndian(src[(2 * i)..]);
                break;
            case TensorType.I32:
                for (int i = 0; i < dst.Length; i++) dst[i] = BinaryPrimitives.ReadInt32LittleEndian(src[(4 * i)..]);
                break;
            case TensorType.I64:
                for (int i = 0; i < dst.Length; i++) dst[i] = BinaryPrimitives.ReadInt64LittleEndian(src[(8 * i)..]);
                break;
            default:
                GgmlBlocks.Dequantize(type, src, dst);
                break;
        }
    }

    /// <summary>bfloat16 is the top 16 bits of a float32.</summary>
    public static float BFloat16ToSingle(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);
}
