using System.Security.Cryptography;
using LlmShrink.Formats;
using LlmShrink.Formats.Gguf;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>
/// The I-quant decoders (<see cref="GgmlIQuantBlocks"/>) against llama.cpp's own dequantization of many random blocks, and
/// against hand-built blocks whose floats are worked out from the layouts in ggml-common.h in the comments. Grid entries
/// used by hand are quoted from ggml-common.h's tables (e.g. iq2xxs_grid[1] = 0x080808080808082b: bytes 43, 8, 8, 8, 8, 8,
/// 8, 8). fp16: 0x3800 = 0.5, 0x3C00 = 1.
/// </summary>
public class GgufIQuantDecodingTests
{
    private static float[] Decode(TensorType type, byte[] blocks)
    {
        var y = new float[blocks.Length / TensorTypes.BlockBytes(type) * TensorTypes.BlockElements(type)];
        GgmlBlocks.Dequantize(type, blocks, y);
        return y;
    }

    private static void AssertBitsEqual(float[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                Assert.Fail($"element {i}: expected {expected[i]:R}, got {actual[i]:R}");
    }

    private static void PutHalf(byte[] block, int offset, ushort bits) { block[offset] = (byte)bits; block[offset + 1] = (byte)(bits >> 8); }
    private static void PutUInt32(byte[] block, int offset, uint value) => BitConverter.TryWriteBytes(block.AsSpan(offset), value);

    /// <summary>
    /// <paramref name="blocks"/> blocks of SplitMix64 bytes (seeded with the ggml type id, each 64-bit output stored
    /// little-endian), with bit 14 of the fp16 d cleared (d finite, |d| &lt; 2, subnormals included). IQ1_M keeps d's top
    /// nibble in the high nibble of its last byte, so there that byte's bit 6 is cleared.
    /// </summary>
    private static byte[] RandomBlocks(TensorType type, int blocks)
    {
        int blockBytes = TensorTypes.BlockBytes(type);
        var bytes = new byte[blocks * blockBytes];
        ulong state = GgmlTypeIds.FromTensorType(type);
        for (int i = 0; i < bytes.Length; i += 8)
        {
            ulong z = state += 0x9E3779B97F4A7C15;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
            z ^= z >> 31;
            for (int k = 0; k < 8 && i + k < bytes.Length; k++) bytes[i + k] = (byte)(z >> 8 * k);
        }
        int dHighByte = type == TensorType.IQ1_M ? 55 : 1;
        for (int b = 0; b < blocks; b++) bytes[b * blockBytes + dHighByte] &= 0xBF;
        return bytes;
    }

    /// <summary>
    /// SHA-256 of the float32 bits (little-endian) that llama.cpp c392e50 decodes 256 <see cref="RandomBlocks"/> to, from
    /// a small C program outside the repository: ggml_init (which fills ggml's fp16 table), then
    /// ggml_get_type_traits(type)->to_float over the blocks, linked against that build's libggml-base.
    /// </summary>
    [Theory]
    [InlineData("IQ4_NL", "cd7cda70e38a26acf79ec5d5c92f6a5a7995cf4269f3e67a63ccd5e16e278035")]
    [InlineData("IQ4_XS", "d4c4c3f8659367dc3b552147f5c77a4b2bd05e56c509e0f5f99f202ec88366e6")]
    [InlineData("IQ3_XXS", "4773623f7498592b1ce8ecd9625f782fde7428b0edf2f1e75de79485a1b66d06")]
    [InlineData("IQ3_S", "e3deebb0bcb6a2fc48d08d5b65bb4ef5ade10c31656da4e386ee170e4ec19b8b")]
    [InlineData("IQ2_XXS", "14c83abd7c7edd0470bd1e4451b00d26465611d0df77e1580f33245e28c8747c")]
    [InlineData("IQ2_XS", "f46801fb508ebe69ad14943f43ec12da89efb494749b05e50e4557cfaa16d8e7")]
    [InlineData("IQ2_S", "0fabb7c5110d7ee7c9cc39cfa73d276ff75db6087d023ad2035b8ccc44a89452")]
    [InlineData("IQ1_S", "e2d0326854799f0aba94ca861974808d805fe12f51ab12655155fd98090cb240")]
    [InlineData("IQ1_M", "d5cf7266a756832e305c4f26e87b46a7cea9a26d71cb3df390e84e5f7d7ae812")]
    public void Random_blocks_decode_to_llama_cpp_bits(string typeName, string sha256)
    {
        var type = Enum.Parse<TensorType>(typeName);
        var y = Decode(type, RandomBlocks(type, 256));
        var bits = new byte[4 * y.Length];
        Buffer.BlockCopy(y, 0, bits, 0, bits.Length);
        Assert.Equal(sha256, Convert.ToHexStringLower(SHA256.HashData(bits)));
    }

    [Fact]
    public void Eight_signs_complete_seven_bits_to_an_even_count()
    {
        // ksigns_iq2xs starts 0, 129, 130, 3, 132: odd counts of set bits gain bit 7.
        Assert.Equal([0, 129, 130, 3, 132], Enumerable.Range(0, 5).Select(i => GgmlIQuantBlocks.EightSigns((uint)i)));
        Assert.Equal(255, GgmlIQuantBlocks.EightSigns(127));
        Assert.Equal(126, GgmlIQuantBlocks.EightSigns(126));
    }

    private static readonly float[] Levels = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

    [Fact]
    public void IQ4_NL_scales_the_non_linear_levels()
    {
        // { d = 0.5; qs[j] = j | (15 − j) << 4 }: y[j] = 0.5·level[j], y[16 + j] = 0.5·level[15 − j].
        var block = new byte[18];
        PutHalf(block, 0, 0x3800);
        for (int j = 0; j < 16; j++) block[2 + j] = (byte)(j | (15 - j) << 4);
        var expected = Enumerable.Range(0, 32).Select(i => 0.5f * Levels[i < 16 ? i : 31 - i]).ToArray();
        AssertBitsEqual(expected, Decode(TensorType.IQ4_NL, block));
    }

    [Fact]
    public void IQ4_XS_six_bit_sub_block_scales_offset_by_32()
    {
        // d = 1; sub-block 0 scale 33 = low 1, high 2; sub-block 1 scale 30 = low 14, high 1 → scales_l[0] = 0xE1,
        // scales_h = 0b01_10; the others 0 → scale − 32 = −32. Every qs byte 0x80: low nibble level[0] = −127, high level[8] = 1.
        var block = new byte[136];
        PutHalf(block, 0, 0x3C00);
        block[2] = 0b0110;
        block[4] = 0xE1;
        for (int j = 0; j < 128; j++) block[8 + j] = 0x80;
        var expected = new float[256];
        for (int i = 0; i < 256; i++)
        {
            int scale = i < 32 ? 1 : i < 64 ? -2 : -32;
            expected[i] = scale * (i % 32 < 16 ? -127f : 1f);
        }
        AssertBitsEqual(expected, Decode(TensorType.IQ4_XS, block));
    }

    [Fact]
    public void IQ3_XXS_grid_pairs_with_seven_stored_signs()
    {
        // d = 1. Sub-block 0: indices qs[0..7] = 1, 255, 0, …; its uint32 = scale 3 << 28 | sign group 0 = 0b0000001.
        // db = (0.5 + 3)·0.5 = 1.75. Group 0: iq3xxs_grid[1] = 0x04040414 → 20, 4, 4, 4 and iq3xxs_grid[255] =
        // 0x3e341c04 → 4, 28, 52, 62; signs 0b1000_0001 (one set bit, so bit 7 too): elements 0 and 7 negative.
        // Everything else index 0 (4, 4, 4, 4), no signs; other sub-blocks scale 0: db = 0.25 → 1.
        var block = new byte[98];
        PutHalf(block, 0, 0x3C00);
        block[2] = 1; block[3] = 255;
        PutUInt32(block, 66, 3u << 28 | 0b0000001);
        var expected = Enumerable.Range(0, 256).Select(i => i < 32 ? 7f : 1f).ToArray();
        float[] group0 = [-35f, 7f, 7f, 7f, 7f, 49f, 91f, -108.5f];
        group0.CopyTo(expected, 0);
        AssertBitsEqual(expected, Decode(TensorType.IQ3_XXS, block));
    }

    [Fact]
    public void IQ3_S_nine_bit_indices_explicit_signs_odd_scales()
    {
        // d = 0.5. Sub-block 0: qs[1] = 255 with qh[0] bit 1 → index 511 (iq3s_grid[511] = 0x0f0f0101 → 1, 1, 15, 15) for
        // elements 4..7; qs[0] = 1 → iq3s_grid[1] = 3, 1, 1, 1 for elements 0..3. signs[0] = 0b1100_0001: elements 0, 6, 7
        // negative. scales[0] = 0x21: sub-block 0 scale 1 → db = 0.5·3 = 1.5; sub-block 1 scale 2 → 2.5; others 0.5.
        var block = new byte[110];
        PutHalf(block, 0, 0x3800);
        block[2] = 1; block[3] = 255;
        block[66] = 0b10;
        block[74] = 0b1100_0001;
        block[106] = 0x21;
        var expected = Enumerable.Range(0, 256).Select(i => i < 32 ? 1.5f : i < 64 ? 2.5f : 0.5f).ToArray();
        float[] group0 = [-4.5f, 1.5f, 1.5f, 1.5f, 1.5f, 1.5f, -22.5f, -22.5f];
        group0.CopyTo(expected, 0);
        AssertBitsEqual(expected, Decode(TensorType.IQ3_S, block));
    }

    [Fact]
    public void IQ2_XXS_eight_magnitudes_per_index()
    {
        // d = 1. Sub-block 0: indices 0, 1; second uint32 = scale 3 << 28 | sign group 0 = 0b0000001 (→ elements 0 and 7
        // negative). db = (0.5 + 3)·0.25 = 0.875: grid 0 = all 8 → ±7; iq2xxs_grid[1] → 43, 8, … → 37.625, 7, ….
        // Other sub-blocks: index 0, scale 0 → db = 0.125 → 1.
        var block = new byte[66];
        PutHalf(block, 0, 0x3C00);
        block[3] = 1;
        PutUInt32(block, 6, 3u << 28 | 0b0000001);
        var expected = Enumerable.Range(0, 256).Select(i => i < 32 ? 7f : 1f).ToArray();
        expected[0] = -7f; expected[7] = -7f; expected[8] = 37.625f;
        AssertBitsEqual(expected, Decode(TensorType.IQ2_XXS, block));
    }

    [Fact]
    public void IQ2_XS_nine_bit_indices_and_two_scales_per_32()
    {
        // d = 1. Group 0: index 1 with sign bits 0b0000011 (two set: no eighth) → 43, 8, … with elements 0, 1 negative.
        // Group 2: index 511 (iq2xs_grid[511] = all 43). scales[0] = 0x21: groups 0-1 db = 1.5·0.25 = 0.375, groups 2-3
        // db = 2.5·0.25 = 0.625; other sub-blocks 0.125 → 1.
        var block = new byte[74];
        PutHalf(block, 0, 0x3C00);
        block[2] = 1; block[3] = 0b11 << 1;
        block[6] = 0xFF; block[7] = 0x01;
        block[66] = 0x21;
        var expected = Enumerable.Range(0, 256).Select(i => i < 16 ? 3f : i < 32 ? 5f : 1f).ToArray();
        expected[0] = -16.125f; expected[1] = -3f;
        for (int j = 16; j < 24; j++) expected[j] = 26.875f;
        AssertBitsEqual(expected, Decode(TensorType.IQ2_XS, block));
    }

    [Fact]
    public void IQ2_S_ten_bit_indices_with_explicit_signs()
    {
        // d = 1. Group 0: qs[0] = 1 → iq2s_grid[1] = 43, 8, …; signs[0] = 0b0000_0001 (explicit: element 0 only).
        // Group 1: qs[1] = 255, qh[0] bits 2-3 = 3 → index 1023 (iq2s_grid[1023] = all 43). scales[0] = 0x03: groups
        // 0-1 db = 3.5·0.25 = 0.875, groups 2-3 0.125; other sub-blocks 0.125 → 1.
        var block = new byte[82];
        PutHalf(block, 0, 0x3C00);
        block[2] = 1; block[3] = 255;
        block[34] = 1;
        block[66] = 0b1100;
        block[74] = 0x03;
        var expected = Enumerable.Range(0, 256).Select(i => i < 16 ? 7f : 1f).ToArray();
        expected[0] = -37.625f;
        for (int j = 8; j < 16; j++) expected[j] = 37.625f;
        AssertBitsEqual(expected, Decode(TensorType.IQ2_S, block));
    }

    [Fact]
    public void IQ1_S_ternary_grid_shifted_by_an_eighth()
    {
        // d = 0.5. Sub-block 0: qh[0] = delta sign (bit 15) | scale 1 << 12 | high bits of group 1 = 7 (bits 3-5):
        // dl = 0.5·3 = 1.5, delta −1/8. Group 0 index 1 (iq1s_grid[1] = 0xffffffffffffff01 → 1, −1, …, −1); group 1 index
        // qs[1] = 255 | 7 << 8 = 2047 (all 1); groups 2, 3 index 0 (all −1). Other sub-blocks: scale 0, +1/8, index 0.
        var block = new byte[50];
        PutHalf(block, 0, 0x3800);
        block[2] = 1; block[3] = 255;
        block[34] = 7 << 3; block[35] = 0x80 | 1 << 4;
        var expected = Enumerable.Range(0, 256).Select(i => i < 32 ? 1.5f * (-1 - 0.125f) : 0.5f * (-1 + 0.125f)).ToArray();
        expected[0] = 1.5f * (1 - 0.125f);
        for (int j = 8; j < 16; j++) expected[j] = 1.5f * (1 - 0.125f);
        AssertBitsEqual(expected, Decode(TensorType.IQ1_S, block));
    }

    [Fact]
    public void IQ1_M_scale_spread_over_the_scale_nibbles()
    {
        // d = 0.5 = fp16 0x3800: nibbles 0, 0, 8, 3 go to the top of the four uint16 scales. uint16 0 also holds sub-block
        // 0's scales: first 16 = 1 (bits 0-2), last 16 = 2 (bits 3-5) → dl = 0.5·3 = 1.5 and 0.5·5 = 2.5; sub-block 1's
        // (bits 6-11) 0 → 0.5. qh[0] = 0x8F: group 0 high bits 7 and delta −1/8, group 1 delta −1/8; qs[0] = 255 →
        // index 2047 (all 1). Everything else index 0 (all −1), delta +1/8; other sub-blocks' scales 0 → 0.5.
        var block = new byte[56];
        block[0] = 255;
        block[32] = 0x8F;
        PutHalf(block, 48, 0x0000 | 1 | 2 << 3);
        PutHalf(block, 50, 0x0000);
        PutHalf(block, 52, 0x8000);
        PutHalf(block, 54, 0x3000);
        var expected = Enumerable.Range(0, 256).Select(i => 0.5f * (-1 + 0.125f)).ToArray();
        for (int j = 0; j < 8; j++) expected[j] = 1.5f * (1 - 0.125f);
        for (int j = 8; j < 16; j++) expected[j] = 1.5f * (-1 - 0.125f);
        for (int j = 16; j < 32; j++) expected[j] = 2.5f * (-1 + 0.125f);
        AssertBitsEqual(expected, Decode(TensorType.IQ1_M, block));
    }
}
