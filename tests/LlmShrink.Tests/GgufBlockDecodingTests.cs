using Xunit;
using LlmShrink.Formats;

namespace LlmShrink.Tests;

/// <summary>
/// One hand-built block per ggml type, its bytes worked out from the layouts in ggml-common.h, and the floats
/// dequantize_row_* (ggml-quants.c) must produce worked out by hand in the comments. Compared bit for bit
/// (so −0.0 ≠ +0.0). fp16: 0x3000 = 0.125, 0x3400 = 0.25, 0x3800 = 0.5, 0x3C00 = 1, 0xBC00 = −1.
/// </summary>
public class GgufBlockDecodingTests
{
    private static float[] Decode(TensorType type, byte[] blocks, int elements)
    {
        Assert.Equal(elements / TensorTypes.BlockElements(type) * TensorTypes.BlockBytes(type), blocks.Length);
        var y = new float[elements];
        GgmlBlocks.Dequantize(type, blocks, y);
        return y;
    }

    private static void AssertBitsEqual(float[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                Assert.Fail($"element {i}: expected {expected[i]:R} (bits {BitConverter.SingleToInt32Bits(expected[i]):X8}), got {actual[i]:R} (bits {BitConverter.SingleToInt32Bits(actual[i]):X8})");
    }

    private static void PutHalf(byte[] block, int offset, ushort bits) { block[offset] = (byte)bits; block[offset + 1] = (byte)(bits >> 8); }

    /// <summary>Nibbles: byte j of qs = j (low, element j) | (15 − j) (high, element j + 16).</summary>
    private static void PutRampNibbles(byte[] block, int offset)
    {
        for (int j = 0; j < 16; j++) block[offset + j] = (byte)(j | (15 - j) << 4);
    }

    /// <summary>Each group of 16 consecutive elements shares one value: expand 16 group values to 256.</summary>
    private static float[] PerGroupOf16(params float[] groups) => Enumerable.Range(0, 256).Select(i => groups[i / 16]).ToArray();
    private static float[] PerGroupOf32(params float[] groups) => Enumerable.Range(0, 256).Select(i => groups[i / 32]).ToArray();

    [Fact]
    public void Q4_0_subtracts_8_and_scales()
    {
        // { d = 0.5; qs } : y[j] = (j − 8)·0.5, y[16 + j] = (15 − j − 8)·0.5 = (7 − j)·0.5
        var block = new byte[18];
        PutHalf(block, 0, 0x3800);
        PutRampNibbles(block, 2);
        float[] expected =
        [
            -4f, -3.5f, -3f, -2.5f, -2f, -1.5f, -1f, -0.5f, 0f, 0.5f, 1f, 1.5f, 2f, 2.5f, 3f, 3.5f,
            3.5f, 3f, 2.5f, 2f, 1.5f, 1f, 0.5f, 0f, -0.5f, -1f, -1.5f, -2f, -2.5f, -3f, -3.5f, -4f,
        ];
        AssertBitsEqual(expected, Decode(TensorType.Q4_0, block, 32));
    }

    [Fact]
    public void Q4_1_scales_and_adds_the_minimum()
    {
        // { d = 0.5; m = −1; qs } : y[j] = j·0.5 − 1, y[16 + j] = (15 − j)·0.5 − 1
        var block = new byte[20];
        PutHalf(block, 0, 0x3800);
        PutHalf(block, 2, 0xBC00);
        PutRampNibbles(block, 4);
        float[] expected =
        [
            -1f, -0.5f, 0f, 0.5f, 1f, 1.5f, 2f, 2.5f, 3f, 3.5f, 4f, 4.5f, 5f, 5.5f, 6f, 6.5f,
            6.5f, 6f, 5.5f, 5f, 4.5f, 4f, 3.5f, 3f, 2.5f, 2f, 1.5f, 1f, 0.5f, 0f, -0.5f, -1f,
        ];
        AssertBitsEqual(expected, Decode(TensorType.Q4_1, block, 32));
    }

    [Fact]
    public void Q5_0_takes_the_fifth_bit_of_element_i_from_bit_i_of_qh()
    {
        // { d = 0.25; qh = 0x5555AAAA (bytes AA AA 55 55); qs }: bit i of qh is element i's +16.
        // Elements 0..15: odd ones have the bit:  y[j] = (j + 16·odd − 16)·0.25.
        // Elements 16..31: bits 16, 18, … (even j): y[16 + j] = (15 − j + 16·even − 16)·0.25.
        var block = new byte[22];
        PutHalf(block, 0, 0x3400);
        block[2] = 0xAA; block[3] = 0xAA; block[4] = 0x55; block[5] = 0x55;
        PutRampNibbles(block, 6);
        float[] expected =
        [
            -4f, 0.25f, -3.5f, 0.75f, -3f, 1.25f, -2.5f, 1.75f, -2f, 2.25f, -1.5f, 2.75f, -1f, 3.25f, -0.5f, 3.75f,
            3.75f, -0.5f, 3.25f, -1f, 2.75f, -1.5f, 2.25f, -2f, 1.75f, -2.5f, 1.25f, -3f, 0.75f, -3.5f, 0.25f, -4f,
        ];
        AssertBitsEqual(expected, Decode(TensorType.Q5_0, block, 32));
    }

    [Fact]
    public void Q5_1_scales_five_bit_quants_and_adds_the_minimum()
    {
        // { d = 0.5; m = 1; qh = 0xFFFF0000 (elements 16..31 get +16); qs }:
        // y[j] = j·0.5 + 1; y[16 + j] = (15 − j + 16)·0.5 + 1
        var block = new byte[24];
        PutHalf(block, 0, 0x3800);
        PutHalf(block, 2, 0x3C00);
        block[4] = 0x00; block[5] = 0x00; block[6] = 0xFF; block[7] = 0xFF;
        PutRampNibbles(block, 8);
        float[] expected =
        [
            1f, 1.5f, 2f, 2.5f, 3f, 3.5f, 4f, 4.5f, 5f, 5.5f, 6f, 6.5f, 7f, 7.5f, 8f, 8.5f,
            16.5f, 16f, 15.5f, 15f, 14.5f, 14f, 13.5f, 13f, 12.5f, 12f, 11.5f, 11f, 10.5f, 10f, 9.5f, 9f,
        ];
        AssertBitsEqual(expected, Decode(TensorType.Q5_1, block, 32));
    }

    [Fact]
    public void Q8_0_scales_signed_bytes()
    {
        // { d = 0.125; qs[j] = 8j − 128 } : y[j] = (8j − 128)/8 = j − 16
        var block = new byte[34];
        PutHalf(block, 0, 0x3000);
        for (int j = 0; j < 32; j++) block[2 + j] = (byte)(sbyte)(8 * j - 128);
        float[] expected = Enumerable.Range(-16, 32).Select(v => (float)v).ToArray();
        AssertBitsEqual(expected, Decode(TensorType.Q8_0, block, 32));
    }

    [Fact]
    public void Q8_0_decodes_consecutive_blocks_each_with_its_own_scale()
    {
        // Block 0: d = 1, all q = 3 → 3.  Block 1: d = −1, all q = −2 → 2.
        var blocks = new byte[68];
        PutHalf(blocks, 0, 0x3C00);
        for (int j = 0; j < 32; j++) blocks[2 + j] = 3;
        PutHalf(blocks, 34, 0xBC00);
        for (int j = 0; j < 32; j++) blocks[36 + j] = unchecked((byte)-2);
        var expected = Enumerable.Repeat(3f, 32).Concat(Enumerable.Repeat(2f, 32)).ToArray();
        AssertBitsEqual(expected, Decode(TensorType.Q8_0, blocks, 64));
    }

    [Fact]
    public void Q2_K_two_bit_quants_with_4_bit_scales_and_mins()
    {
        // block_q2_K { scales[16] @0, qs[64] @16, d @80, dmin @82 }, d = 0.5, dmin = 0.25.
        // scales[g] = g | (15 − g) << 4: group g has scale g and min 15 − g.
        // Half 0 qs bytes = 0xE4 = 0b11_10_01_00 → shift 2j gives q = j; half 1 bytes = 0x1B → q = 3 − j.
        // Element 128h + 32j + l is in group 8h + 2j + l/16: y = (0.5·g)·q − 0.25·(15 − g).
        var block = new byte[84];
        for (int g = 0; g < 16; g++) block[g] = (byte)(g | (15 - g) << 4);
        for (int l = 0; l < 32; l++) { block[16 + l] = 0xE4; block[48 + l] = 0x1B; }
        PutHalf(block, 80, 0x3800);
        PutHalf(block, 82, 0x3400);
        // g: 0:(0)−3.75  1:−3.5  2:(1·1)−3.25  3:(1.5·1)−3  4:(2·2)−2.75  5:(2.5·2)−2.5  6:(3·3)−2.25  7:(3.5·3)−2
        //    8:(4·3)−1.75  9:(4.5·3)−1.5  10:(5·2)−1.25  11:(5.5·2)−1  12:(6·1)−0.75  13:(6.5·1)−0.5  14:0−0.25  15:0−0
        var expected = PerGroupOf16(-3.75f, -3.5f, -2.25f, -1.5f, 1.25f, 2.5f, 6.75f, 8.5f,
                                    10.25f, 12f, 8.75f, 10f, 5.25f, 6f, -0.25f, 0f);
        // qs[20] (half 0, l = 20) = 0: elements 20 (g1, unchanged), 52 (g3: 0 − 3 = −3), 84 (g5: −2.5), 116 (g7: −2).
        block[16 + 20] = 0x00;
        expected[52] = -3f; expected[84] = -2.5f; expected[116] = -2f;
        // qs[32 + 3] (half 1, l = 3) = 0xFF (q = 3): 131 (g8, unchanged), 163 (g10: 5·3 − 1.25 = 13.75),
        // 195 (g12: 6·3 − 0.75 = 17.25), 227 (g14: 7·3 − 0.25 = 20.75).
        block[48 + 3] = 0xFF;
        expected[163] = 13.75f; expected[195] = 17.25f; expected[227] = 20.75f;
        AssertBitsEqual(expected, Decode(TensorType.Q2_K, block, 256));
    }

    [Fact]
    public void Q3_K_three_bit_quants_with_packed_6_bit_signed_scales()
    {
        // block_q3_K { hmask[32] @0, qs[64] @32, scales[12] @96, d @108 }, d = 0.5.
        // 6-bit scales s_g = 24 + g, i.e. s_g − 32 = g − 8. Low nibbles: g < 8 → 8 + g in byte g's low nibble;
        // g ≥ 8 → g − 8 in byte g − 8's high nibble, so byte b = (8 + b) | b << 4. High 2 bits: 1 for g < 8, 2 for g ≥ 8,
        // at bits 2·(g/4) of byte 8 + g%4 → each of bytes 8..11 = 1 | 1<<2 | 2<<4 | 2<<6 = 0xA5.
        // Low quant bits as in Q2_K (half 0: q = j, half 1: q = 3 − j). hmask[l] = 0x0F: bits 0..3 (half 0) set,
        // bits 4..7 (half 1) clear, and a clear bit subtracts 4. Group g (= element/16): y = (0.5·(g − 8))·q.
        var block = new byte[110];
        for (int l = 0; l < 32; l++) { block[l] = 0x0F; block[32 + l] = 0xE4; block[64 + l] = 0x1B; }
        for (int b = 0; b < 8; b++) block[96 + b] = (byte)((8 + b) | b << 4);
        for (int b = 8; b < 12; b++) block[96 + b] = 0xA5;
        PutHalf(block, 108, 0x3800);
        // g: 0: −4·0 = −0   1: −3.5·0 = −0   2: −3·1   3: −2.5·1   4: −2·2   5: −1.5·2   6: −1·3   7: −0.5·3
        //    8: 0·(−1) = −0  9: 0.5·(−1)  10: 1·(−2)  11: 1.5·(−2)  12: 2·(−3)  13: 2.5·(−3)  14: 3·(−4)  15: 3.5·(−4)
        var expected = PerGroupOf16(-0f, -0f, -3f, -2.5f, -4f, -3f, -3f, -1.5f,
                                    -0f, -0.5f, -2f, -3f, -6f, -7.5f, -12f, -14f);
        // hmask[20] = 0: half-0 elements with l = 20 lose their high bit (q − 4):
        // 20 (g1: −3.5·−4 = 14), 52 (g3: −2.5·−3 = 7.5), 84 (g5: −1.5·−2 = 3), 116 (g7: −0.5·−1 = 0.5).
        block[20] = 0x00;
        expected[20] = 14f; expected[52] = 7.5f; expected[84] = 3f; expected[116] = 0.5f;
        // qs[32 + 3] = 0xFF and hmask[3] = 0xFF: half-1 elements with l = 3 get q = 3:
        // 131 (g8: 0·3 = +0), 163 (g10: 3), 195 (g12: 6), 227 (g14: 9).
        block[32 + 32 + 3] = 0xFF;
        block[3] = 0xFF;
        expected[131] = 0f; expected[163] = 3f; expected[195] = 6f; expected[227] = 9f;
        AssertBitsEqual(expected, Decode(TensorType.Q3_K, block, 256));
    }

    /// <summary>
    /// The 12 packed bytes of 8 six-bit (scale, min) pairs for Q4_K/Q5_K: scales 1, 2, 3, 4, 17, 33, 63, 48 and
    /// mins 0, 5, 10, 63, 20, 40, 1, 32. Bytes 0..3 = scale_j | (scale_{j+4} >> 4) << 6; bytes 4..7 = min_j |
    /// (min_{j+4} >> 4) << 6; bytes 8..11 = (scale_{j+4} &amp; 15) | (min_{j+4} &amp; 15) << 4.
    /// 17 = 01|0001, 33 = 10|0001, 63 = 11|1111, 48 = 11|0000; 20 = 01|0100, 40 = 10|1000, 1 = 00|0001, 32 = 10|0000.
    /// </summary>
    private static readonly byte[] PackedScalesAndMins =
        [0x41, 0x82, 0xC3, 0xC4, 0x40, 0x85, 0x0A, 0xBF, 0x41, 0x81, 0x1F, 0x00];

    [Fact]
    public void Q4_K_four_bit_quants_with_6_bit_scales_and_mins()
    {
        // block_q4_K { d @0, dmin @2, scales[12] @4, qs[128] @16 }, d = 0.5, dmin = 0.25.
        // All qs = 0x3A: even sub-blocks (low nibbles) q = 10, odd ones (high nibbles) q = 3.
        // Sub-block s = element/32: y = (0.5·scale)·q − 0.25·min.
        var block = new byte[144];
        PutHalf(block, 0, 0x3800);
        PutHalf(block, 2, 0x3400);
        PackedScalesAndMins.CopyTo(block, 4);
        for (int i = 0; i < 128; i++) block[16 + i] = 0x3A;
        // s: 0: 0.5·10 − 0 = 5   1: 1·3 − 1.25 = 1.75   2: 1.5·10 − 2.5 = 12.5   3: 2·3 − 15.75 = −9.75
        //    4: 8.5·10 − 5 = 80   5: 16.5·3 − 10 = 39.5   6: 31.5·10 − 0.25 = 314.75   7: 24·3 − 8 = 64
        var expected = PerGroupOf32(5f, 1.75f, 12.5f, -9.75f, 80f, 39.5f, 314.75f, 64f);
        // qs[32 + 7] = 0xF0: element 71 (s2, q = 0): −2.5; element 103 (s3, q = 15): 2·15 − 15.75 = 14.25.
        block[16 + 32 + 7] = 0xF0;
        expected[71] = -2.5f; expected[103] = 14.25f;
        AssertBitsEqual(expected, Decode(TensorType.Q4_K, block, 256));
    }

    [Fact]
    public void Q5_K_adds_16_from_the_high_bit_of_each_sub_block()
    {
        // block_q5_K { d @0, dmin @2, scales[12] @4, qh[32] @16, qs[128] @48 }, d = 0.5, dmin = 0.25, scales as for Q4_K.
        // qs = 0x3A (q = 10 low, 3 high); qh = 0xA5 = bits 0, 2, 5, 7 → sub-blocks 0, 2, 5, 7 get +16.
        var block = new byte[176];
        PutHalf(block, 0, 0x3800);
        PutHalf(block, 2, 0x3400);
        PackedScalesAndMins.CopyTo(block, 4);
        for (int l = 0; l < 32; l++) block[16 + l] = 0xA5;
        for (int i = 0; i < 128; i++) block[48 + i] = 0x3A;
        // s: 0: 0.5·26 − 0 = 13   1: 1·3 − 1.25 = 1.75   2: 1.5·26 − 2.5 = 36.5   3: 2·3 − 15.75 = −9.75
        //    4: 8.5·10 − 5 = 80   5: 16.5·19 − 10 = 303.5   6: 31.5·10 − 0.25 = 314.75   7: 24·19 − 8 = 448
        var expected = PerGroupOf32(13f, 1.75f, 36.5f, -9.75f, 80f, 303.5f, 314.75f, 448f);
        // qh[7] = 0 removes the +16 of elements 7 (s0: 5), 71 (s2), 167 (s5: 16.5·3 − 10 = 39.5), 231 (s7: 24·3 − 8 = 64);
        // qs[32 + 7] = 0xF0: element 71 (s2, q = 0): −2.5; element 103 (s3, q = 15): 14.25.
        block[16 + 7] = 0x00;
        block[48 + 32 + 7] = 0xF0;
        expected[7] = 5f; expected[71] = -2.5f; expected[103] = 14.25f; expected[167] = 39.5f; expected[231] = 64f;
        AssertBitsEqual(expected, Decode(TensorType.Q5_K, block, 256));
    }

    [Fact]
    public void Q6_K_six_bit_quants_with_signed_8_bit_scales()
    {
        // block_q6_K { ql[128] @0, qh[64] @128, scales[16] @192 (int8), d @208 }, d = 0.25, scales[g] = g − 8.
        // ql = 0x5A (low nibble 10, high 5); qh = 0xE4 (bits 2k..2k+1 = k). Within a half, the 32-element
        // quarter k takes: k0 = 10 | 0<<4 = 10, k1 = 10 | 1<<4 = 26, k2 = 5 | 2<<4 = 37, k3 = 5 | 3<<4 = 53; minus 32:
        // −22, −6, 5, 21. Group g = element/16: y = (0.25·(g − 8))·q.
        var block = new byte[210];
        for (int i = 0; i < 128; i++) block[i] = 0x5A;
        for (int i = 0; i < 64; i++) block[128 + i] = 0xE4;
        for (int g = 0; g < 16; g++) block[192 + g] = (byte)(sbyte)(g - 8);
        PutHalf(block, 208, 0x3400);
        // g: 0: −2·−22 = 44   1: −1.75·−22 = 38.5   2: −1.5·−6 = 9   3: −1.25·−6 = 7.5   4: −1·5   5: −0.75·5
        //    6: −0.5·21   7: −0.25·21   8: 0·−22 = −0   9: 0.25·−22   10: 0.5·−6   11: 0.75·−6   12: 1·5   13: 1.25·5
        //    14: 1.5·21   15: 1.75·21
        var expected = PerGroupOf16(44f, 38.5f, 9f, 7.5f, -5f, -3.75f, -10.5f, -5.25f,
                                    -0f, -5.5f, -3f, -4.5f, 5f, 6.25f, 31.5f, 36.75f);
        // Half 1, ql[32 + 3] = 0x0F: element 163 (k1: 15 | 1<<4 = 31 → −1, g10: 0.5·−1 = −0.5) and
        // element 227 (k3: 0 | 3<<4 = 48 → 16, g14: 1.5·16 = 24).
        block[64 + 32 + 3] = 0x0F;
        expected[163] = -0.5f; expected[227] = 24f;
        // Half 1, qh[5] = 0: elements 133 (k0 unchanged), 165 (k1: 10 → −22, g10: −11), 197 (k2: 5 → −27, g12: −27),
        // 229 (k3: 5 → −27, g14: −40.5).
        block[128 + 32 + 5] = 0x00;
        expected[165] = -11f; expected[197] = -27f; expected[229] = -40.5f;
        AssertBitsEqual(expected, Decode(TensorType.Q6_K, block, 256));
    }

    [Fact]
    public void Rejects_a_destination_that_is_not_whole_blocks()
    {
        Assert.Throws<ArgumentException>(() => GgmlBlocks.Dequantize(TensorType.Q4_0, new byte[18], new float[31]));
        Assert.Throws<ArgumentException>(() => GgmlBlocks.Dequantize(TensorType.Q6_K, new byte[209], new float[256]));
    }
}
