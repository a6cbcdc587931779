using System.Buffers.Binary;
using System.Numerics;

namespace LlmShrink.Formats;

/// <summary>
/// Decoders for llama.cpp's I-quants, giving exactly the floats of <c>dequantize_row_iq*</c> (ggml-quants.c) from the
/// block layouts of ggml-common.h. IQ4_NL and IQ4_XS store 4-bit indices into 16 non-uniform levels. The others store,
/// per group of 8 weights, an index into a codebook of magnitude patterns (<see cref="IQuantGrids"/>) and the group's
/// signs, under a scale per 16 or 32 weights; IQ1_S/IQ1_M's codebook holds signed values {−1, 0, 1}, shifted by ±1/8.
/// As in <see cref="GgmlBlocks"/>, the arithmetic is float32 in the reference's order, so results are bit-identical.
/// </summary>
internal static class GgmlIQuantBlocks
{
    /// <summary>
    /// The 16 levels of IQ4_NL and IQ4_XS (kvalues_iq4nl in ggml-quants.c): closer together near zero, where most
    /// weights lie, than a uniform 4-bit grid.
    /// </summary>
    internal static ReadOnlySpan<sbyte> NonLinearLevels => [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

    /// <summary>IQ1_S/IQ1_M shift every value of a group of 8 by this, up or down as the group's delta bit says (IQ1S_DELTA).</summary>
    private const float Iq1Delta = 0.125f;

    /// <summary>
    /// A group of 8 signs from the 7 stored bits (bit j set = weight j negative; the ksigns_iq2xs table). The encoders flip
    /// the sign of a group's least important weight when the group has an odd number of negatives, so the count is always
    /// even and the eighth sign is the parity of the other seven.
    /// </summary>
    internal static int EightSigns(uint sevenBits) => (int)sevenBits | (BitOperations.PopCount(sevenBits) & 1) << 7;

    /// <summary>
    /// y[j] = scale·magnitude[j]·(±1), negative where bit j of <paramref name="signs"/> is set. The ±1 is computed
    /// as 1 − 2·bit rather than chosen by a branch: signs are random, and a mispredicted branch per weight made these
    /// decoders several times slower.
    /// </summary>
    private static void PutSigned(Span<float> y, float scale, ReadOnlySpan<byte> magnitudes, int signs)
    {
        for (int j = 0; j < magnitudes.Length; j++) y[j] = scale * magnitudes[j] * (float)(1 - 2 * (signs >> j & 1));
    }

    /// <summary>y[j] = scale·(value[j] + delta): IQ1_S/IQ1_M's group of 8.</summary>
    private static void PutShifted(Span<float> y, float scale, ReadOnlySpan<sbyte> values, float delta)
    {
        for (int j = 0; j < 8; j++) y[j] = scale * (values[j] + delta);
    }

    private static ReadOnlySpan<byte> Entry(byte[] grid, int width, int index) => grid.AsSpan(width * index, width);

    /// <summary>block_iq4_nl = { fp16 d; u8 qs[16] }, nibbles laid out as Q4_0's: y = d·level[q].</summary>
    public static void DecodeIQ4_NL(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = GgmlBlocks.Fp16(block, 0);
        var qs = block.Slice(2, 16);
        for (int j = 0; j < 16; j++)
        {
            y[j] = d * NonLinearLevels[qs[j] & 0xF];
            y[j + 16] = d * NonLinearLevels[qs[j] >> 4];
        }
    }

    /// <summary>
    /// block_iq4_xs = { fp16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128] }: eight sub-blocks of 32, each laid out as an
    /// IQ4_NL block, with a 6-bit scale s whose low 4 bits are nibble (sub % 2) of scales_l[sub / 2] and high 2 bits are
    /// bits 2·sub, 2·sub + 1 of scales_h. y = (d·(s − 32))·level[q].
    /// </summary>
    public static void DecodeIQ4_XS(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = GgmlBlocks.Fp16(block, 0);
        for (int sub = 0; sub < 8; sub++)
        {
            float dl = d * IQ4_XSScale(block, sub);
            var qs = block.Slice(8 + 16 * sub, 16);
            for (int j = 0; j < 16; j++)
            {
                y[32 * sub + j] = dl * NonLinearLevels[qs[j] & 0xF];
                y[32 * sub + j + 16] = dl * NonLinearLevels[qs[j] >> 4];
            }
        }
    }

    /// <summary>Sub-block <paramref name="sub"/>'s signed scale s − 32 ∈ [−32, 31] of an IQ4_XS block (see <see cref="DecodeIQ4_XS"/>).</summary>
    internal static int IQ4_XSScale(ReadOnlySpan<byte> block, int sub)
    {
        int scalesHigh = BinaryPrimitives.ReadUInt16LittleEndian(block[2..]);
        return ((block[4 + sub / 2] >> 4 * (sub % 2) & 0xF) | (scalesHigh >> 2 * sub & 3) << 4) - 32;
    }

    /// <summary>
    /// block_iq3_xxs = { fp16 d; u8 qs[64]; u8 scales_and_signs[32] }. Sub-block s of 32 weights: eight indices qs[8s + k]
    /// into the 256-entry grid of 4 magnitudes, and a little-endian uint32 at scales_and_signs[4s] holding a 7-bit sign
    /// group per 8 weights (bits 7l … 7l + 6) and a 4-bit scale in bits 28 … 31. y = (d·(0.5 + scale)·0.5)·magnitude·sign.
    /// </summary>
    public static void DecodeIQ3_XXS(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = GgmlBlocks.Fp16(block, 0);
        for (int sub = 0; sub < 8; sub++)
        {
            var indices = block.Slice(2 + 8 * sub, 8);
            uint signsAndScale = BinaryPrimitives.ReadUInt32LittleEndian(block[(66 + 4 * sub)..]);
            float db = d * (0.5f + (signsAndScale >> 28)) * 0.5f;
            for (int l = 0; l < 4; l++)
            {
                int signs = EightSigns(signsAndScale >> 7 * l & 127);
                var group = y.Slice(32 * sub + 8 * l, 8);
                PutSigned(group[..4], db, Entry(IQuantGrids.Iq3Xxs, 4, indices[2 * l]), signs);
                PutSigned(group[4..], db, Entry(IQuantGrids.Iq3Xxs, 4, indices[2 * l + 1]), signs >> 4);
            }
        }
    }

    /// <summary>
    /// block_iq3_s = { fp16 d; u8 qs[64]; u8 qh[8]; u8 signs[32]; u8 scales[4] }. Sub-block s of 32 weights: eight 9-bit
    /// indices (low byte qs[8s + k], high bit bit k of qh[s]) into the 512-entry grid of 4 magnitudes, one byte of signs per
    /// 8 weights (signs[4s + l]), and a 4-bit scale, nibble (s % 2) of scales[s / 2]. y = (d·(1 + 2·scale))·magnitude·sign.
    /// </summary>
    public static void DecodeIQ3_S(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = GgmlBlocks.Fp16(block, 0);
        for (int sub = 0; sub < 8; sub++)
        {
            int scale = block[106 + sub / 2] >> 4 * (sub % 2) & 0xF;
            float db = d * (1 + 2 * scale);
            int highBits = block[66 + sub];
            for (int l = 0; l < 4; l++)
            {
                int signs = block[74 + 4 * sub + l];
                for (int half = 0; half < 2; half++)
                {
                    int k = 2 * l + half;
                    int index = block[2 + 8 * sub + k] | (highBits >> k & 1) << 8;
                    PutSigned(y.Slice(32 * sub + 8 * l + 4 * half, 4), db, Entry(IQuantGrids.Iq3S, 4, index), signs >> 4 * half);
                }
            }
        }
    }

    /// <summary>
    /// block_iq2_xxs = { fp16 d; u16 qs[32] }. Sub-block s of 32 weights is 8 bytes read as two little-endian uint32: the
    /// first holds four 8-bit indices into the 256-entry grid of 8 magnitudes, the second a 7-bit sign group per 8 weights
    /// (bits 7l … 7l + 6) and a 4-bit scale in bits 28 … 31. y = (d·(0.5 + scale)·0.25)·magnitude·sign.
    /// </summary>
    public static void DecodeIQ2_XXS(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = GgmlBlocks.Fp16(block, 0);
        for (int sub = 0; sub < 8; sub++)
        {
            var indices = block.Slice(2 + 8 * sub, 4);
            uint signsAndScale = BinaryPrimitives.ReadUInt32LittleEndian(block[(6 + 8 * sub)..]);
            float db = d * (0.5f + (signsAndScale >> 28)) * 0.25f;
            for (int l = 0; l < 4; l++)
                PutSigned(y.Slice(32 * sub + 8 * l, 8), db, Entry(IQuantGrids.Iq2Xxs, 8, indices[l]), EightSigns(signsAndScale >> 7 * l & 127));
        }
    }

    /// <summary>
    /// block_iq2_xs = { fp16 d; u16 qs[32]; u8 scales[8] }. Each uint16 of qs is one group of 8 weights: a 9-bit index into
    /// the 512-entry grid of 8 magnitudes and 7 sign bits above it. scales[s] holds two 4-bit scales for sub-block s, the
    /// low nibble for its first 16 weights. y = (d·(0.5 + scale)·0.25)·magnitude·sign.
    /// </summary>
    public static void DecodeIQ2_XS(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = GgmlBlocks.Fp16(block, 0);
        for (int sub = 0; sub < 8; sub++)
        {
            float dbLow = d * (0.5f + (block[66 + sub] & 0xF)) * 0.25f;
            float dbHigh = d * (0.5f + (block[66 + sub] >> 4)) * 0.25f;
            for (int l = 0; l < 4; l++)
            {
                uint q = BinaryPrimitives.ReadUInt16LittleEndian(block[(2 + 2 * (4 * sub + l))..]);
                PutSigned(y.Slice(32 * sub + 8 * l, 8), l < 2 ? dbLow : dbHigh, Entry(IQuantGrids.Iq2Xs, 8, (int)(q & 511)), EightSigns(q >> 9));
            }
        }
    }

    /// <summary>
    /// block_iq2_s = { fp16 d; u8 qs[32]; u8 signs[32]; u8 qh[8]; u8 scales[8] } (ggml-common.h declares qs[64], whose
    /// second half is the signs). Group l of sub-block s: a 10-bit index (low byte qs[4s + l], high bits 2l, 2l + 1 of qh[s])
    /// into the 1024-entry grid of 8 magnitudes, and 8 explicit sign bits signs[4s + l]. Scales as in IQ2_XS.
    /// </summary>
    public static void DecodeIQ2_S(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = GgmlBlocks.Fp16(block, 0);
        for (int sub = 0; sub < 8; sub++)
        {
            float dbLow = d * (0.5f + (block[74 + sub] & 0xF)) * 0.25f;
            float dbHigh = d * (0.5f + (block[74 + sub] >> 4)) * 0.25f;
            int highBits = block[66 + sub];
            for (int l = 0; l < 4; l++)
            {
                int index = block[2 + 4 * sub + l] | (highBits >> 2 * l & 3) << 8;
                PutSigned(y.Slice(32 * sub + 8 * l, 8), l < 2 ? dbLow : dbHigh, Entry(IQuantGrids.Iq2S, 8, index), block[34 + 4 * sub + l]);
            }
        }
    }

    /// <summary>
    /// block_iq1_s = { fp16 d; u8 qs[32]; u16 qh[8] }. Sub-block s of 32 weights: qh[s] holds the high 3 bits of each group's
    /// index (bits 3l … 3l + 2), a 3-bit scale in bits 12 … 14 and the delta's sign in bit 15; index = qs[4s + l] | high·256
    /// into the 2048-entry grid of 8 values in {−1, 0, 1}. y = (d·(2·scale + 1))·(value ± 1/8).
    /// </summary>
    public static void DecodeIQ1_S(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = GgmlBlocks.Fp16(block, 0);
        for (int sub = 0; sub < 8; sub++)
        {
            int qh = BinaryPrimitives.ReadUInt16LittleEndian(block[(34 + 2 * sub)..]);
            float dl = d * (2 * (qh >> 12 & 7) + 1);
            float delta = (qh & 0x8000) != 0 ? -Iq1Delta : Iq1Delta;
            for (int l = 0; l < 4; l++)
            {
                int index = block[2 + 4 * sub + l] | (qh >> 3 * l & 7) << 8;
                PutShifted(y.Slice(32 * sub + 8 * l, 8), dl, IQuantGrids.Iq1S.AsSpan(8 * index, 8), delta);
            }
        }
    }

    /// <summary>
    /// block_iq1_m = { u8 qs[32]; u8 qh[16]; u8 scales[8] }, with no field for d: read as four little-endian uint16, scales
    /// keeps d's fp16 bits 4k … 4k + 3 in the top nibble of uint16 k, and in the low 12 bits of uint16 s/2 the 3-bit scales
    /// of sub-block s (from bit 6·(s % 2): the first 16 weights', then the last 16's). Group l of sub-block s has the high 3
    /// bits of its index and its delta sign (bit 3) in nibble (l % 2) of qh[2s + l/2]; index = qs[4s + l] | high·256 into
    /// IQ1_S's grid. y = (d·(2·scale + 1))·(value ± 1/8).
    /// </summary>
    public static void DecodeIQ1_M(ReadOnlySpan<byte> block, Span<float> y)
    {
        Span<int> packed = stackalloc int[4];
        for (int k = 0; k < 4; k++) packed[k] = BinaryPrimitives.ReadUInt16LittleEndian(block[(48 + 2 * k)..]);
        int dBits = packed[0] >> 12 | (packed[1] >> 8 & 0x00F0) | (packed[2] >> 4 & 0x0F00) | (packed[3] & 0xF000);
        float d = (float)BitConverter.UInt16BitsToHalf((ushort)dBits);
        for (int sub = 0; sub < 8; sub++)
        {
            int shift = 6 * (sub % 2);
            float dlFirst = d * (2 * (packed[sub / 2] >> shift & 7) + 1);
            float dlLast = d * (2 * (packed[sub / 2] >> (shift + 3) & 7) + 1);
            for (int l = 0; l < 4; l++)
            {
                int nibble = block[32 + 2 * sub + l / 2] >> 4 * (l % 2) & 0xF;
                int index = block[4 * sub + l] | (nibble & 7) << 8;
                float delta = (nibble & 8) != 0 ? -Iq1Delta : Iq1Delta;
                PutShifted(y.Slice(32 * sub + 8 * l, 8), l < 2 ? dlFirst : dlLast, IQuantGrids.Iq1S.AsSpan(8 * index, 8), delta);
            }
        }
    }
}
