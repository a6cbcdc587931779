using System.Buffers.Binary;

namespace LlmShrink.Formats;

/// <summary>
/// Decoders for ggml's block-quantized types, giving exactly the floats of llama.cpp's <c>dequantize_row_*</c>
/// (ggml-quants.c), with the block layouts of ggml-common.h. Every scale is an IEEE fp16; the arithmetic is done
/// in float32 in the same order as the reference, so results are bit-identical. This is the readable scalar
/// definition; fast kernels live in Kernels/ and are tested against it. The I-quants (IQ4_NL … IQ1_M) are decoded by
/// <see cref="GgmlIQuantBlocks"/>.
/// </summary>
public static class GgmlBlocks
{
    /// <summary>Decodes <c>dst.Length</c> elements (a whole number of blocks) from the blocks at the start of <paramref name="src"/>.</summary>
    public static void Dequantize(TensorType type, ReadOnlySpan<byte> src, Span<float> dst)
    {
        if (!TensorTypes.IsBlockQuantized(type)) throw new ArgumentException($"{type} is not a ggml block type", nameof(type));
        int blockElements = TensorTypes.BlockElements(type);
        int blockBytes = TensorTypes.BlockBytes(type);
        if (dst.Length % blockElements != 0) throw new ArgumentException($"{dst.Length} elements is not a whole number of {type} blocks of {blockElements}", nameof(dst));
        int blocks = dst.Length / blockElements;
        if (src.Length < (long)blocks * blockBytes) throw new ArgumentException($"{blocks} {type} blocks need {(long)blocks * blockBytes} bytes, got {src.Length}", nameof(src));

        for (int b = 0; b < blocks; b++)
        {
            var block = src.Slice(b * blockBytes, blockBytes);
            var y = dst.Slice(b * blockElements, blockElements);
            switch (type)
            {
                case TensorType.Q4_0: DecodeQ4_0(block, y); break;
                case TensorType.Q4_1: DecodeQ4_1(block, y); break;
                case TensorType.Q5_0: DecodeQ5_0(block, y); break;
                case TensorType.Q5_1: DecodeQ5_1(block, y); break;
                case TensorType.Q8_0: DecodeQ8_0(block, y); break;
                case TensorType.Q2_K: DecodeQ2_K(block, y); break;
                case TensorType.Q3_K: DecodeQ3_K(block, y); break;
                case TensorType.Q4_K: DecodeQ4_K(block, y); break;
                case TensorType.Q5_K: DecodeQ5_K(block, y); break;
                case TensorType.Q6_K: DecodeQ6_K(block, y); break;
                case TensorType.IQ4_NL: GgmlIQuantBlocks.DecodeIQ4_NL(block, y); break;
                case TensorType.IQ4_XS: GgmlIQuantBlocks.DecodeIQ4_XS(block, y); break;
                case TensorType.IQ3_XXS: GgmlIQuantBlocks.DecodeIQ3_XXS(block, y); break;
                case TensorType.IQ3_S: GgmlIQuantBlocks.DecodeIQ3_S(block, y); break;
                case TensorType.IQ2_XXS: GgmlIQuantBlocks.DecodeIQ2_XXS(block, y); break;
                case TensorType.IQ2_XS: GgmlIQuantBlocks.DecodeIQ2_XS(block, y); break;
                case TensorType.IQ2_S: GgmlIQuantBlocks.DecodeIQ2_S(block, y); break;
                case TensorType.IQ1_S: GgmlIQuantBlocks.DecodeIQ1_S(block, y); break;
                case TensorType.IQ1_M: GgmlIQuantBlocks.DecodeIQ1_M(block, y); break;
                default: throw new ArgumentException($"{type} is not a ggml block type", nameof(type));
            }
        }
    }

    /// <summary>The fp16 at byte <paramref name="offset"/>, widened exactly to float32 (GGML_FP16_TO_FP32).</summary>
    public static float Fp16(ReadOnlySpan<byte> bytes, int offset) =>
        (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(bytes[offset..]));

    // ---- 32-element blocks. Byte j of qs holds element j in its low nibble and element j+16 in its high nibble.

    /// <summary>block_q4_0 = { fp16 d; u8 qs[16] }: y = (q - 8)·d.</summary>
    private static void DecodeQ4_0(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = Fp16(block, 0);
        var qs = block.Slice(2, 16);
        for (int j = 0; j < 16; j++)
        {
            y[j] = ((qs[j] & 0xF) - 8) * d;
            y[j + 16] = ((qs[j] >> 4) - 8) * d;
        }
    }

    /// <summary>block_q4_1 = { fp16 d; fp16 m; u8 qs[16] }: y = q·d + m.</summary>
    private static void DecodeQ4_1(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = Fp16(block, 0), m = Fp16(block, 2);
        var qs = block.Slice(4, 16);
        for (int j = 0; j < 16; j++)
        {
            y[j] = (qs[j] & 0xF) * d + m;
            y[j + 16] = (qs[j] >> 4) * d + m;
        }
    }

    /// <summary>block_q5_0 = { fp16 d; u8 qh[4]; u8 qs[16] }: the fifth bit of element i is bit i of the
    /// little-endian uint32 qh; y = (q - 16)·d.</summary>
    private static void DecodeQ5_0(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = Fp16(block, 0);
        uint qh = BinaryPrimitives.ReadUInt32LittleEndian(block[2..]);
        var qs = block.Slice(6, 16);
        for (int j = 0; j < 16; j++)
        {
            y[j] = (FiveBits(qs[j] & 0xF, qh, j) - 16) * d;
            y[j + 16] = (FiveBits(qs[j] >> 4, qh, j + 16) - 16) * d;
        }
    }

    /// <summary>block_q5_1 = { fp16 d; fp16 m; u8 qh[4]; u8 qs[16] }: y = q·d + m.</summary>
    private static void DecodeQ5_1(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = Fp16(block, 0), m = Fp16(block, 2);
        uint qh = BinaryPrimitives.ReadUInt32LittleEndian(block[4..]);
        var qs = block.Slice(8, 16);
        for (int j = 0; j < 16; j++)
        {
            y[j] = FiveBits(qs[j] & 0xF, qh, j) * d + m;
            y[j + 16] = FiveBits(qs[j] >> 4, qh, j + 16) * d + m;
        }
    }

    private static int FiveBits(int lowNibble, uint qh, int element) => lowNibble | (int)((qh >> element) & 1) << 4;

    /// <summary>block_q8_0 = { fp16 d; i8 qs[32] }: y = q·d.</summary>
    private static void DecodeQ8_0(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = Fp16(block, 0);
        for (int j = 0; j < 32; j++) y[j] = (sbyte)block[2 + j] * d;
    }

    // ---- 256-element K-quant super-blocks (QK_K = 256).

    /// <summary>
    /// block_q2_K = { u8 scales[16]; u8 qs[64]; fp16 d; fp16 dmin }. Sixteen groups of 16; scales[g] holds the
    /// group's 4-bit scale (low nibble) and 4-bit min (high nibble). Each half of 128 elements uses 32 bytes of qs:
    /// element 32·j + l of the half is bits 2j..2j+1 of byte l. y = (d·scale)·q − dmin·min.
    /// </summary>
    private static void DecodeQ2_K(ReadOnlySpan<byte> block, Span<float> y)
    {
        var scales = block[..16];
        var qs = block.Slice(16, 64);
        float d = Fp16(block, 80), dmin = Fp16(block, 82);
        for (int half = 0; half < 2; half++)
        {
            var q = qs.Slice(32 * half, 32);
            for (int j = 0; j < 4; j++)
            {
                int shift = 2 * j;
                for (int l = 0; l < 32; l++)
                {
                    int group = 8 * half + 2 * j + l / 16;
                    float dl = d * (scales[group] & 0xF);
                    float ml = dmin * (scales[group] >> 4);
                    y[128 * half + 32 * j + l] = dl * ((q[l] >> shift) & 3) - ml;
                }
            }
        }
    }

    /// <summary>
    /// block_q3_K = { u8 hmask[32]; u8 qs[64]; u8 scales[12]; fp16 d }. Quants are 2 low bits laid out as in Q2_K
    /// plus a high bit: element 32·j + l of half h has its high bit in bit 4h + j of hmask[l]; a clear high bit
    /// subtracts 4, so q ∈ [−4, 3]. Sixteen signed 6-bit group scales (see <see cref="Q3KScale"/>), offset by 32.
    /// y = (d·(scale − 32))·q.
    /// </summary>
    private static void DecodeQ3_K(ReadOnlySpan<byte> block, Span<float> y)
    {
        var hmask = block[..32];
        var qs = block.Slice(32, 64);
        var scales = block.Slice(96, 12);
        float d = Fp16(block, 108);
        for (int half = 0; half < 2; half++)
        {
            var q = qs.Slice(32 * half, 32);
            for (int j = 0; j < 4; j++)
            {
                int shift = 2 * j;
                int highBit = 1 << (4 * half + j);
                for (int l = 0; l < 32; l++)
                {
                    float dl = d * (Q3KScale(scales, 8 * half + 2 * j + l / 16) - 32);
                    int quant = ((q[l] >> shift) & 3) - ((hmask[l] & highBit) != 0 ? 0 : 4);
                    y[128 * half + 32 * j + l] = dl * quant;
                }
            }
        }
    }

    /// <summary>
    /// Q3_K's 6-bit scale of group g (0..15) from its 12 packed bytes: the low 4 bits are the low nibble of byte g
    /// (g &lt; 8) or the high nibble of byte g − 8; the high 2 bits are bits 2·(g/4)..+1 of byte 8 + g%4.
    /// This is what ggml-quants.c's kmask1/kmask2 word shuffle computes four scales at a time.
    /// </summary>
    internal static int Q3KScale(ReadOnlySpan<byte> scales, int g)
    {
        int low = g < 8 ? scales[g] & 0xF : scales[g - 8] >> 4;
        int high = (scales[8 + g % 4] >> (2 * (g / 4))) & 3;
        return low | high << 4;
    }

    /// <summary>
    /// The 6-bit scale and min of sub-block j (0..7) of Q4_K/Q5_K (get_scale_min_k4): sub-blocks 0..3 keep theirs in
    /// the low 6 bits of bytes j and j+4; sub-blocks 4..7 keep the low 4 bits in byte j+4 (scale low nibble, min high
    /// nibble) and the high 2 bits in the top bits of bytes j−4 (scale) and j (min).
    /// </summary>
    internal static (int Scale, int Min) ScaleMinK4(ReadOnlySpan<byte> packed, int j) =>
        j < 4
            ? (packed[j] & 63, packed[j + 4] & 63)
            : ((packed[j + 4] & 0xF) | (packed[j - 4] >> 6) << 4, (packed[j + 4] >> 4) | (packed[j] >> 6) << 4);

    /// <summary>
    /// block_q4_K = { fp16 d; fp16 dmin; u8 scales[12]; u8 qs[128] }. Eight sub-blocks of 32; each 64 elements share
    /// 32 bytes of qs, the first 32 in the low nibbles, the next 32 in the high nibbles. y = (d·scale)·q − dmin·min.
    /// </summary>
    private static void DecodeQ4_K(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = Fp16(block, 0), dmin = Fp16(block, 2);
        var scales = block.Slice(4, 12);
        var qs = block.Slice(16, 128);
        for (int chunk = 0; chunk < 4; chunk++)
        {
            var (scaleLow, minLow) = ScaleMinK4(scales, 2 * chunk);
            var (scaleHigh, minHigh) = ScaleMinK4(scales, 2 * chunk + 1);
            float d1 = d * scaleLow, m1 = dmin * minLow;
            float d2 = d * scaleHigh, m2 = dmin * minHigh;
            var q = qs.Slice(32 * chunk, 32);
            for (int l = 0; l < 32; l++)
            {
                y[64 * chunk + l] = d1 * (q[l] & 0xF) - m1;
                y[64 * chunk + 32 + l] = d2 * (q[l] >> 4) - m2;
            }
        }
    }

    /// <summary>
    /// block_q5_K = { fp16 d; fp16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128] }: Q4_K plus a fifth bit (+16) for
    /// element l of sub-block s in bit s of qh[l].
    /// </summary>
    private static void DecodeQ5_K(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = Fp16(block, 0), dmin = Fp16(block, 2);
        var scales = block.Slice(4, 12);
        var qh = block.Slice(16, 32);
        var qs = block.Slice(48, 128);
        for (int chunk = 0; chunk < 4; chunk++)
        {
            var (scaleLow, minLow) = ScaleMinK4(scales, 2 * chunk);
            var (scaleHigh, minHigh) = ScaleMinK4(scales, 2 * chunk + 1);
            float d1 = d * scaleLow, m1 = dmin * minLow;
            float d2 = d * scaleHigh, m2 = dmin * minHigh;
            int bitLow = 1 << (2 * chunk), bitHigh = 2 << (2 * chunk);
            var q = qs.Slice(32 * chunk, 32);
            for (int l = 0; l < 32; l++)
            {
                y[64 * chunk + l] = d1 * ((q[l] & 0xF) + ((qh[l] & bitLow) != 0 ? 16 : 0)) - m1;
                y[64 * chunk + 32 + l] = d2 * ((q[l] >> 4) + ((qh[l] & bitHigh) != 0 ? 16 : 0)) - m2;
            }
        }
    }

    /// <summary>
    /// block_q6_K = { u8 ql[128]; u8 qh[64]; i8 scales[16]; fp16 d }. Per half of 128 elements: 64 bytes of ql and
    /// 32 of qh. Element l + 32k (k = 0..3, l = 0..31) takes its low 4 bits from ql[l] (k = 0), ql[l+32] (k = 1), or
    /// their high nibbles (k = 2, 3), and its high 2 bits from bits 2k..2k+1 of qh[l]; q − 32 ∈ [−32, 31] is scaled
    /// by the signed 8-bit scale of its group of 16. y = (d·scale)·q.
    /// </summary>
    private static void DecodeQ6_K(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = Fp16(block, 208);
        for (int half = 0; half < 2; half++)
        {
            var ql = block.Slice(64 * half, 64);
            var qh = block.Slice(128 + 32 * half, 32);
            var scales = block.Slice(192 + 8 * half, 8);
            for (int l = 0; l < 32; l++)
            {
                int group = l / 16;
                int q1 = ((ql[l] & 0xF) | ((qh[l] >> 0) & 3) << 4) - 32;
                int q2 = ((ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4) - 32;
                int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
                int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
                y[128 * half + l] = d * (sbyte)scales[group] * q1;
                y[128 * half + l + 32] = d * (sbyte)scales[group + 2] * q2;
                y[128 * half + l + 64] = d * (sbyte)scales[group + 4] * q3;
                y[128 * half + l + 96] = d * (sbyte)scales[group + 6] * q4;
            }
        }
    }
}
