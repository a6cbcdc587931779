using LlmShrink.Formats;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>Block encoders checked through the project's exact decoders: error bounds, re-encoding, fixed vectors, K-quant quality.</summary>
public class GgmlEncoderTests
{
    private static float[] Gaussian(int n, int seed, float sigma = 1f)
    {
        var random = new Random(seed);
        var x = new float[n];
        for (int i = 0; i < n; i++)
            x[i] = sigma * MathF.Sqrt(-2 * MathF.Log(1 - random.NextSingle())) * MathF.Cos(2 * MathF.PI * random.NextSingle());
        return x;
    }

    private static (byte[] Bytes, float[] Decoded) RoundTrip(TensorType type, float[] x)
    {
        var bytes = new byte[TensorTypes.ByteCount(type, x.Length)];
        TensorEncoding.EncodeRow(type, x, bytes);
        var decoded = new float[x.Length];
        TensorDecoding.DecodeRow(type, bytes, decoded);
        return (bytes, decoded);
    }

    private static double Rmse(float[] a, float[] b) => Math.Sqrt(a.Zip(b, (p, q) => (double)(p - q) * (p - q)).Average());

    /// <summary>The fp16 scale stored in the first two bytes of block <paramref name="b"/>.</summary>
    private static float Scale(byte[] bytes, int b, TensorType type, int offset = 0) => GgmlBlocks.Fp16(bytes, b * TensorTypes.BlockBytes(type) + offset);

    // A stored fp16 scale is within 2^-11 (relative) of the float32 one the quants were computed from; a level q then
    // moves by at most |q|·2^-11·d.
    private const float Fp16Relative = 1f / 2048;

    [Fact]
    public void Q8_0_error_is_at_most_half_a_step_per_block()
    {
        var x = Gaussian(32 * 64, seed: 1, sigma: 0.05f);
        var (bytes, y) = RoundTrip(TensorType.Q8_0, x);
        for (int b = 0; b < 64; b++)
        {
            float d = Math.Abs(Scale(bytes, b, TensorType.Q8_0));
            Assert.True(d > 0);
            for (int j = 32 * b; j < 32 * b + 32; j++)
                Assert.True(Math.Abs(x[j] - y[j]) <= d / 2 + 127 * d * Fp16Relative, $"element {j}: {x[j]} → {y[j]} with d = {d}");
        }
    }

    [Theory]
    [InlineData(TensorType.Q4_0, 8)]   // levels −8..7: the far side of the outlier can sit a whole step off (x/d = 8 → 7)
    [InlineData(TensorType.Q5_0, 16)]
    public void Symmetric_types_stay_within_one_step(TensorType type, int half)
    {
        var x = Gaussian(32 * 64, seed: 2);
        var (bytes, y) = RoundTrip(type, x);
        for (int b = 0; b < 64; b++)
        {
            float d = Math.Abs(Scale(bytes, b, type));
            for (int j = 32 * b; j < 32 * b + 32; j++)
            {
                // Interior elements round to nearest; only the clamped top level can be a full step away.
                float bound = d * (x[j] * Math.Sign(Scale(bytes, b, type)) > (half - 0.5f) * d ? 1 : 0.5f) + half * d * Fp16Relative + 1e-7f;
                Assert.True(Math.Abs(x[j] - y[j]) <= bound, $"{type} element {j}: {x[j]} → {y[j]} with d = {d}");
            }
        }
    }

    [Theory]
    [InlineData(TensorType.Q4_1, 15)]
    [InlineData(TensorType.Q5_1, 31)]
    public void Affine_types_stay_within_half_a_step(TensorType type, int levels)
    {
        var x = Gaussian(32 * 64, seed: 3);
        var (bytes, y) = RoundTrip(type, x);
        for (int b = 0; b < 64; b++)
        {
            float d = Scale(bytes, b, type), m = Scale(bytes, b, type, 2);
            for (int j = 32 * b; j < 32 * b + 32; j++)
                Assert.True(Math.Abs(x[j] - y[j]) <= d / 2 + (levels * d + Math.Abs(m)) * Fp16Relative + 1e-6f, $"{type} element {j}: {x[j]} → {y[j]}");
        }
    }

    [Theory]
    [InlineData(TensorType.Q8_0)]
    [InlineData(TensorType.Q4_0)]
    [InlineData(TensorType.Q5_0)]
    public void Already_quantized_values_re_encode_exactly(TensorType type)
    {
        var (_, once) = RoundTrip(type, Gaussian(32 * 32, seed: 4));
        var (_, twice) = RoundTrip(type, once);
        Assert.Equal(once, twice);
    }

    [Fact]
    public void Q8_0_fixed_vector()
    {
        var x = new float[32];
        x[0] = -127;
        for (int j = 1; j < 32; j++) x[j] = j;
        var (bytes, y) = RoundTrip(TensorType.Q8_0, x);
        Assert.Equal(new byte[] { 0x00, 0x3C, 0x81 }, bytes[..3]); // d = 1.0 as fp16, q0 = −127
        for (int j = 1; j < 32; j++) Assert.Equal(j, bytes[2 + j]);
        Assert.Equal(x, y);
    }

    [Fact]
    public void Q4_0_and_Q4_1_fixed_vectors()
    {
        var symmetric = Enumerable.Range(0, 32).Select(j => (float)(j % 16 - 8)).ToArray();
        var (q40, y40) = RoundTrip(TensorType.Q4_0, symmetric);
        Assert.Equal(new byte[] { 0x00, 0x3C }, q40[..2]);            // d = −8 / −8 = 1
        for (int j = 0; j < 16; j++) Assert.Equal((byte)(j | j << 4), q40[2 + j]);
        Assert.Equal(symmetric, y40);

        var affine = Enumerable.Range(0, 32).Select(j => (float)(2 + j % 16)).ToArray();
        var (q41, y41) = RoundTrip(TensorType.Q4_1, affine);
        Assert.Equal(new byte[] { 0x00, 0x3C, 0x00, 0x40 }, q41[..4]); // d = 15 / 15 = 1, m = 2
        for (int j = 0; j < 16; j++) Assert.Equal((byte)(j | j << 4), q41[4 + j]);
        Assert.Equal(affine, y41);
    }

    [Fact]
    public void Q5_0_fifth_bits_land_in_qh()
    {
        // x = q − 16 with q = j: elements 16..31 have the fifth bit set, 0..15 do not.
        var x = Enumerable.Range(0, 32).Select(j => (float)(j - 16)).ToArray();
        var (bytes, y) = RoundTrip(TensorType.Q5_0, x);
        Assert.Equal(new byte[] { 0x00, 0x3C, 0x00, 0x00, 0xFF, 0xFF }, bytes[..6]);
        Assert.Equal(x, y);
    }

    [Theory]
    [InlineData(TensorType.Q2_K)]
    [InlineData(TensorType.Q3_K)]
    [InlineData(TensorType.Q4_K)]
    [InlineData(TensorType.Q5_K)]
    [InlineData(TensorType.Q6_K)]
    public void All_zero_super_blocks_decode_to_zero(TensorType type)
    {
        var (_, y) = RoundTrip(type, new float[512]);
        Assert.All(y, v => Assert.Equal(0f, v));
    }

    [Fact]
    public void Q4_K_constant_block_uses_the_top_scale_level()
    {
        var x = Enumerable.Repeat(1f, 256).ToArray();
        var (bytes, y) = RoundTrip(TensorType.Q4_K, x);
        for (int j = 0; j < 4; j++) Assert.Equal(63, bytes[4 + j] & 63); // every sub-block scale is the maximum
        Assert.All(y, v => Assert.InRange(v, 1 - 1e-3f, 1 + 1e-3f));
    }

    [Fact]
    public void Q2_K_values_on_its_grid_decode_exactly()
    {
        // Group g holds a_g·L − m_g with every L ∈ [0, 3] present, a_g = s_g/8 and m_g = t_g/16 for 4-bit s_g, t_g whose
        // largest are 15. make_qkx2_quants fits each group exactly (error 0 from the start), so the largest scale 15/8 and
        // min 15/16 give d = 1/8 and dmin = 1/16, and group g stores s_g | t_g << 4.
        var s = Enumerable.Range(0, 16).Select(g => 1 + 7 * g % 15).ToArray();
        var t = Enumerable.Range(0, 16).Select(g => 15 - g).ToArray();
        var x = new float[256];
        for (int e = 0; e < 256; e++) x[e] = s[e / 16] / 8f * ((3 * e + e / 16) % 4) - t[e / 16] / 16f;
        var (bytes, y) = RoundTrip(TensorType.Q2_K, x);
        Assert.Equal(x, y);
        Assert.Equal(Enumerable.Range(0, 16).Select(g => (byte)(s[g] | t[g] << 4)).ToArray(), bytes[..16]);
        Assert.Equal(new byte[] { 0x00, 0x30, 0x00, 0x2C }, bytes[80..84]); // d = 2⁻³, dmin = 2⁻⁴ as fp16
    }

    [Fact]
    public void Q3_K_values_on_its_grid_decode_exactly()
    {
        // Group g holds (g + 1)·q with q ∈ [−4, 3], −4 included: make_q3_quants finds scale g + 1, the largest (16) maps to
        // −32, so d = 16/−32 = −0.5 and group g stores −2(g + 1) + 32 = 30 − 2g.
        var x = new float[256];
        for (int e = 0; e < 256; e++) x[e] = (e / 16 + 1) * ((7 * e + 3) % 8 - 4);
        var (bytes, y) = RoundTrip(TensorType.Q3_K, x);
        Assert.Equal(x, y);
        Assert.Equal(new byte[] { 0x00, 0xB8 }, bytes[108..110]); // d = −0.5 as fp16
        // Low nibbles of 30 − 2g: groups g and g + 8 share byte g (low, high nibble); the top 2 bits (1 for g < 8, 0 after)
        // go to bits 2·(g/4) of byte 8 + g % 4.
        Assert.Equal(new byte[] { 0xEE, 0xCC, 0xAA, 0x88, 0x66, 0x44, 0x22, 0x00, 0x05, 0x05, 0x05, 0x05 }, bytes[96..108]);
    }

    /// <summary>Group g's grid as the decoder reads it: step·q − offset for q ∈ [lowest, highest].</summary>
    private static (float Step, float Offset, int Lowest, int Highest) GroupGrid(TensorType type, ReadOnlySpan<byte> block, int g)
    {
        if (type == TensorType.Q2_K) return (GgmlBlocks.Fp16(block, 80) * (block[g] & 0xF), GgmlBlocks.Fp16(block, 82) * (block[g] >> 4), 0, 3);
        var scales = block.Slice(96, 12);
        int scale = (scales[g % 8] >> (g < 8 ? 0 : 4) & 0xF) | (scales[8 + g % 4] >> (2 * (g / 4)) & 3) << 4;
        return (GgmlBlocks.Fp16(block, 108) * (scale - 32), 0, -4, 3);
    }

    /// <summary>
    /// Q2_K/Q3_K round trips. Every element decodes to the point of its group's stored grid nearest to it (the re-rounding
    /// against the stored 4-/6-bit scales, and a packing the decoder agrees with). And each super-block's RMS error is
    /// below range/(2^bits − 1)/√12, the error of rounding values spread evenly over the block's range to one grid of
    /// 2^bits levels spanning it: sixteen group grids must beat one. Measured worst/bound on this data: Q2_K 0.66,
    /// Q3_K 0.78; the RMS error over all blocks is 0.30σ (Q2_K) and 0.15σ (Q3_K).
    /// </summary>
    [Theory]
    [InlineData(TensorType.Q2_K, 2, 0.32)]
    [InlineData(TensorType.Q3_K, 3, 0.16)]
    public void Low_bit_K_quants_round_to_their_stored_grids_and_beat_one_grid_per_block(TensorType type, int bits, double sigmas)
    {
        const int blocks = 64;
        var x = Gaussian(256 * blocks, seed: 6);
        var (bytes, y) = RoundTrip(type, x);
        int blockBytes = TensorTypes.BlockBytes(type);
        for (int b = 0; b < blocks; b++)
        {
            var block = bytes.AsSpan(b * blockBytes, blockBytes);
            for (int g = 0; g < 16; g++)
            {
                var (step, offset, lowest, highest) = GroupGrid(type, block, g);
                for (int i = 256 * b + 16 * g; i < 256 * b + 16 * g + 16; i++)
                {
                    float nearest = float.MaxValue;
                    for (int q = lowest; q <= highest; q++) nearest = Math.Min(nearest, Math.Abs(x[i] - (step * q - offset)));
                    Assert.True(Math.Abs(x[i] - y[i]) <= nearest + 1e-6f, $"{type} element {i}: {x[i]} → {y[i]}, nearest grid point {nearest} away");
                }
            }
            var xs = x[(256 * b)..(256 * b + 256)];
            double bound = (xs.Max() - xs.Min()) / ((1 << bits) - 1) / Math.Sqrt(12);
            double rmse = Rmse(xs, y[(256 * b)..(256 * b + 256)]);
            Assert.True(rmse < bound, $"{type} block {b}: RMSE {rmse:G4} vs one-grid {bound:G4}");
        }
        Assert.True(Rmse(x, y) < sigmas, $"{type} RMSE {Rmse(x, y):G4}");
    }

    /// <summary>
    /// The plain alternative to the K-quant search: per sub-block, the float32 min/max affine fit (or, for Q6_K, the
    /// symmetric max fit) rounded to nearest, with scales kept in full precision. The K-quants store 6- or 8-bit scales
    /// and must still do at least as well.
    /// </summary>
    private static float[] MinMaxBaseline(float[] x, int group, int levels, bool symmetric)
    {
        var y = new float[x.Length];
        for (int g = 0; g < x.Length; g += group)
        {
            var sub = x.AsSpan(g, group);
            if (symmetric)
            {
                float amax = 0;
                foreach (float v in sub) amax = Math.Max(amax, Math.Abs(v));
                float d = amax / (levels / 2);
                for (int i = 0; i < group; i++) y[g + i] = d * Math.Clamp(MathF.Round(sub[i] / d), -levels / 2, levels / 2 - 1);
            }
            else
            {
                float min = float.MaxValue, max = float.MinValue;
                foreach (float v in sub) { min = Math.Min(min, v); max = Math.Max(max, v); }
                float d = (max - min) / levels;
                for (int i = 0; i < group; i++) y[g + i] = min + d * MathF.Round((sub[i] - min) / d);
            }
        }
        return y;
    }

    [Theory]
    [InlineData(TensorType.Q2_K, 16, 3, false)]
    [InlineData(TensorType.Q3_K, 16, 8, true)]
    [InlineData(TensorType.Q4_K, 32, 15, false)]
    [InlineData(TensorType.Q5_K, 32, 31, false)]
    [InlineData(TensorType.Q6_K, 16, 64, true)]
    public void K_quants_beat_plain_min_max_rounding_on_gaussian_data(TensorType type, int group, int levels, bool symmetric)
    {
        var x = Gaussian(256 * 32, seed: 5);
        var (_, y) = RoundTrip(type, x);
        double kQuant = Rmse(x, y), baseline = Rmse(x, MinMaxBaseline(x, group, levels, symmetric));
        Assert.True(kQuant <= baseline, $"{type} RMSE {kQuant:G4} vs min/max baseline {baseline:G4}");
        // And the error is the size a step of that many levels implies (not, say, a mis-packed scale).
        Assert.True(kQuant < 3.0 * 2 * 3 / (levels + 1) / Math.Sqrt(12) * 1.5, $"{type} RMSE {kQuant:G4}");
    }

    [Fact]
    public void Bfloat16_rounds_to_nearest_even()
    {
        ushort Bf(uint bits) => TensorEncoding.SingleToBFloat16(BitConverter.UInt32BitsToSingle(bits));
        Assert.Equal(0x3F80, Bf(0x3F800000)); // 1.0
        Assert.Equal(0x3F80, Bf(0x3F808000)); // tie, kept bit even → down
        Assert.Equal(0x3F82, Bf(0x3F818000)); // tie, kept bit odd → up
        Assert.Equal(0x3F81, Bf(0x3F808001)); // just above the tie → up
        Assert.Equal(0x3F80, Bf(0x3F807FFF)); // just below → down
        Assert.Equal(0x7F80, Bf(0x7F7FFFFF)); // float max rounds to infinity
        Assert.Equal(0xFF80, Bf(0xFF800000)); // −infinity
        Assert.True(float.IsNaN(TensorDecoding.BFloat16ToSingle(Bf(0x7F800001)))); // a NaN stays NaN
    }

    [Fact]
    public void Float16_rounds_to_nearest_even()
    {
        var x = new[] { 1f + 1f / 2048, 1f + 3f / 2048, 65520f, -0f };
        var (bytes, y) = RoundTrip(TensorType.F16, x);
        Assert.Equal(1f, y[0]);               // tie → even (1.0)
        Assert.Equal(1f + 4f / 2048, y[1]);   // tie → even (1 + 2^-9)
        Assert.True(float.IsPositiveInfinity(y[2]));
        Assert.Equal(0x80, bytes[7]);         // sign of −0 kept
    }
}
