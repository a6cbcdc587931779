using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace LlmShrink.Formats;

/// <summary>Turns a row of float32 into stored elements of a <see cref="TensorType"/> (the inverse of <see cref="TensorDecoding"/>).</summary>
public static class TensorEncoding
{
    /// <summary>Types a row can be encoded to: the floats and the block types <see cref="GgmlQuantizers"/> writes.</summary>
    public static bool CanEncode(TensorType type) =>
        type is TensorType.F32 or TensorType.F16 or TensorType.BF16 || GgmlQuantizers.CanEncode(type);

    /// <summary>Encodes <c>src.Length</c> elements into the first <see cref="TensorTypes.ByteCount"/> bytes of <paramref name="dst"/>.</summary>
    public static void EncodeRow(TensorType type, ReadOnlySpan<float> src, Span<byte> dst)
    {
        switch (type)
        {
            case TensorType.F32:
                MemoryMarshal.AsBytes(src).CopyTo(dst);
                break;
            case TensorType.F16:
                for (int i = 0; i < src.Length; i++)
                    BinaryPrimitives.WriteUInt16LittleEndian(dst[(2 * i)..], BitConverter.HalfToUInt16Bits((Half)src[i]));
                break;
            case TensorType.BF16:
                for (int i = 0; i < src.Length; i++)
                    BinaryPrimitives.WriteUInt16LittleEndian(dst[(2 * i)..], SingleToBFloat16(src[i]));
                break;
            default:
                GgmlQuantizers.Quantize(type, src, dst);
                break;
        }
    }

    /// <summary>The values as a reader of them stored as <paramref name="type"/> sees them (encoded, then decoded); F32 returns them as they are.</summary>
    public static float[] Round(TensorType type, float[] values)
    {
        if (type == TensorType.F32) return values;
        var bytes = new byte[TensorTypes.ByteCount(type, values.Length)];
        EncodeRow(type, values, bytes);
        var rounded = new float[values.Length];
        TensorDecoding.DecodeRow(type, bytes, rounded);
        return rounded;
    }

    /// <summary>
    /// float32 → bfloat16 rounded to nearest, ties to even (as PyTorch and ggml's ggml_compute_fp32_to_bf16 do): add
    /// 0x7FFF plus the lowest kept bit, then keep the top 16 bits. NaN stays NaN (quiet bit set) instead of rounding
    /// into infinity.
    /// </summary>
    public static ushort SingleToBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if ((bits & 0x7FFFFFFF) > 0x7F800000) return (ushort)((bits >> 16) | 0x40);
        return (ushort)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
    }
}
