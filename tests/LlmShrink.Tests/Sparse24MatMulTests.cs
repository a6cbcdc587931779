using System.Runtime.Intrinsics;
using LlmShrink.Kernels;
using Xunit;
using static LlmShrink.Tests.QuantKernelTests;

namespace LlmShrink.Tests;

/// <summary>The 2:4-sparse 4-bit matrix (Kernels/Sparse24Int4Matrix.cs) and its kernels (Kernels/Sparse24MatMul.cs).</summary>
public class Sparse24MatMulTests
{
    internal sealed record Sparse(int In, int Out, int GroupSize, byte[] Codes, bool[] Keep, float[] Scales, int[] Zeros)
    {
        public Sparse24Int4Matrix Build() => new(In, Out, GroupSize, Codes, Keep, Scales, Zeros);
    }

    /// <summary>Random codes everywhere (the pruned ones must be ignored), two random places kept per quad, float16 scales, zeros 0 .. 16.</summary>
    internal static Sparse RandomSparse(Random random, int inDim, int outDim, int groupSize)
    {
        int groups = (inDim + groupSize - 1) / groupSize;
        var codes = new byte[outDim * inDim];
        var keep = new bool[outDim * inDim];
        for (int i = 0; i < codes.Length; i++) codes[i] = (byte)random.Next(16);
        for (int quad = 0; quad < codes.Length / 4; quad++)
        {
            int first = random.Next(4), second = (first + 1 + random.Next(3)) % 4;
            keep[4 * quad + first] = keep[4 * quad + second] = true;
        }
        var scales = new float[groups * outDim];
        var zeros = new int[groups * outDim];
        for (int i = 0; i < scales.Length; i++)
        {
            scales[i] = (float)(Half)(0.001f + 0.05f * random.NextSingle());
            zeros[i] = random.Next(Sparse24Int4Matrix.MaxZero + 1);
        }
        return new Sparse(inDim, outDim, groupSize, codes, keep, scales, zeros);
    }

    public static TheoryData<int, int, int> Shapes => new()
    {
        { 256, 33, 128 },   // one superblock, a ragged last quartet
        { 384, 7, 128 },    // three blocks: the last superblock's second block is padding
        { 512, 20, 64 },
        { 1024, 9, 32 },
        { 2048, 12, 128 },
        { 640, 10, 256 },   // a group spans two blocks; the last group is partial
        { 136, 5, 32 },     // in not a multiple of 128: padding inside a block
        { 128, 4, 128 },
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Pack_and_unpack_round_trip(int inDim, int outDim, int groupSize)
    {
        var s = RandomSparse(new Random(inDim + 7 * outDim + groupSize), inDim, outDim, groupSize);
        var matrix = s.Build();
        var (codes, keep) = matrix.Unpack();
        Assert.Equal(s.Keep, keep);
        for (int i = 0; i < codes.Length; i++) Assert.Equal(s.Keep[i] ? s.Codes[i] : 0, codes[i]);

        var tensors = matrix.ToTensors();
        Assert.Equal(s.Scales, tensors.Scales.Select(h => (float)h));
        Assert.Equal(s.Zeros, tensors.Zeros.Select(z => (int)z));
        var rebuilt = Sparse24Int4Matrix.FromTensors(inDim, outDim, groupSize, tensors.Codes, tensors.Positions, tensors.Scales, tensors.Zeros);
        Assert.Equal(matrix.Stream, rebuilt.Stream);
        Assert.Equal(matrix.ScaleStream, rebuilt.ScaleStream);
        Assert.Equal(matrix.ZeroStream, rebuilt.ZeroStream);
        var again = rebuilt.ToTensors();
        Assert.Equal(tensors.Codes, again.Codes);
        Assert.Equal(tensors.Positions, again.Positions);

        var w = matrix.Dequantize();
        for (int o = 0; o < outDim; o++)
            for (int i = 0; i < inDim; i++)
            {
                int g = (i / groupSize) * outDim + o, at = o * inDim + i;
                Assert.Equal(s.Keep[at] ? (s.Codes[at] - s.Zeros[g]) * s.Scales[g] : 0f, w[at]);
            }
    }

    /// <summary>The canonical layout, byte by byte, on one row of 16 inputs (what docs/FORMAT.md describes).</summary>
    [Fact]
    public void Canonical_tensors_have_the_documented_layout()
    {
        // Quads keep places (0, 1), (1, 3), (0, 3), (2, 3); codes 1 .. 8 in input order.
        int[] kept = [0, 1, 5, 7, 8, 11, 14, 15];
        var codes = new byte[16];
        var keep = new bool[16];
        for (int k = 0; k < kept.Length; k++)
        {
            keep[kept[k]] = true;
            codes[kept[k]] = (byte)(k + 1);
        }
        var matrix = new Sparse24Int4Matrix(16, 1, 32, codes, keep, [0.5f], [3]);
        var t = matrix.ToTensors();
        Assert.Equal(new byte[] { 0x21, 0x43, 0x65, 0x87 }, t.Codes);
        // Nibble = p0 | p1 << 2: quad 0 → 0b0100, quad 1 → 0b1101, quad 2 → 0b1100, quad 3 → 0b1110; two quads per byte, low first.
        Assert.Equal(new byte[] { 0xD4, 0xEC }, t.Positions);
        Assert.Equal(new[] { (Half)0.5f }, t.Scales);
        Assert.Equal(new byte[] { 3 }, t.Zeros);
        Assert.Equal(0.5f * (4 - 3), matrix.Dequantize()[7]);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(0)]
    public void Masks_without_exactly_two_of_four_are_rejected(int keptInQuad)
    {
        var s = RandomSparse(new Random(1), 32, 4, 32);
        // Row 2, quad 3 (inputs 12..15) keeps the first keptInQuad inputs.
        for (int p = 0; p < 4; p++) s.Keep[2 * 32 + 12 + p] = p < keptInQuad;
        var error = Assert.Throws<ArgumentException>(() => s.Build());
        Assert.Contains("row 2", error.Message);
        Assert.Contains("inputs 12..15", error.Message);
        Assert.Contains($"{keptInQuad} kept", error.Message);
    }

    [Fact]
    public void Invalid_tensors_and_values_are_rejected()
    {
        var s = RandomSparse(new Random(2), 64, 4, 32);
        var t = s.Build().ToTensors();

        var positions = (byte[])t.Positions.Clone();
        positions[1 * 8 + 2] = (byte)((positions[1 * 8 + 2] & 0xF0) | (3 | 1 << 2)); // row 1, quad 4: places (3, 1), out of order
        var error = Assert.Throws<ArgumentException>(() => Sparse24Int4Matrix.FromTensors(64, 4, 32, t.Codes, positions, t.Scales, t.Zeros));
        Assert.Contains("row 1, quad of inputs 16..19", error.Message);
        positions[1 * 8 + 2] = (byte)((positions[1 * 8 + 2] & 0xF0) | (2 | 2 << 2)); // the same place twice
        Assert.Throws<ArgumentException>(() => Sparse24Int4Matrix.FromTensors(64, 4, 32, t.Codes, positions, t.Scales, t.Zeros));
        Assert.Throws<ArgumentException>(() => Sparse24Int4Matrix.FromTensors(64, 4, 32, t.Codes[1..], t.Positions, t.Scales, t.Zeros));
        Assert.Throws<ArgumentException>(() => Sparse24Int4Matrix.FromTensors(64, 4, 32, t.Codes, t.Positions, t.Scales[1..], t.Zeros));
        var zeros = (byte[])t.Zeros.Clone();
        zeros[3] = 17;
        Assert.Throws<ArgumentException>(() => Sparse24Int4Matrix.FromTensors(64, 4, 32, t.Codes, t.Positions, t.Scales, zeros));
        var scales = (Half[])t.Scales.Clone();
        scales[0] = Half.PositiveInfinity;
        Assert.Throws<ArgumentException>(() => Sparse24Int4Matrix.FromTensors(64, 4, 32, t.Codes, t.Positions, scales, t.Zeros));

        Assert.Throws<ArgumentException>(() => (s with { Scales = s.Scales.Select((v, i) => i == 5 ? 0.1f : v).ToArray() }).Build()); // 0.1 is not a float16 value
        Assert.Throws<ArgumentException>(() => (s with { Zeros = s.Zeros.Select((v, i) => i == 5 ? -1 : v).ToArray() }).Build());
        int keptAt = Array.IndexOf(s.Keep, true);
        Assert.Throws<ArgumentException>(() => (s with { Codes = s.Codes.Select((v, i) => i == keptAt ? (byte)16 : v).ToArray() }).Build());
        var pruned = s with { Codes = s.Codes.Select((v, i) => s.Keep[i] ? v : (byte)200).ToArray() }; // pruned codes are ignored
        Assert.Equal(s.Build().Stream, pruned.Build().Stream);
        Assert.Throws<ArgumentException>(() => (s with { GroupSize = 48 }).Build());
        Assert.Throws<ArgumentException>(() => new Sparse24Int4Matrix(12, 1, 32, new byte[12], new bool[12], [1f], [0]));
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Reference_equals_the_dense_product_of_Dequantize(int inDim, int outDim, int groupSize)
    {
        var random = new Random(inDim * 3 + outDim + groupSize);
        var matrix = RandomSparse(random, inDim, outDim, groupSize).Build();
        var x = RandomVector(random, 3 * inDim);
        float[] sparse = new float[3 * outDim], dense = new float[3 * outDim];
        Sparse24MatMul.MultiplyReference(matrix, x, sparse, 3);
        MatMul.Reference(x, matrix.Dequantize(), dense, 3, inDim, outDim);
        // The same float products summed in double in the same (input) order; the pruned ones add exact zeros.
        Assert.Equal(dense, sparse);
    }

    public static TheoryData<int, int, int, int, int> DecodeCases()
    {
        var cases = new TheoryData<int, int, int, int, int>();
        foreach (var shape in Shapes)
            foreach (int n in new[] { 1, 3, Sparse24MatMul.MaxDecodeRows })
                foreach (int threads in new[] { 1, 2 })
                    cases.Add((int)shape[0], (int)shape[1], (int)shape[2], n, threads);
        return cases;
    }

    [Theory]
    [MemberData(nameof(DecodeCases))]
    public void Decode_matches_its_integer_reference(int inDim, int outDim, int groupSize, int n, int threads)
    {
        if (!Sparse24MatMul.Vectorized) return; // the kernel under test needs AVX-512 VBMI
        var random = new Random(inDim + 5 * outDim + groupSize + n);
        var matrix = RandomSparse(random, inDim, outDim, groupSize).Build();
        var x = RandomVector(random, n * inDim);
        x[random.Next(x.Length)] = 7.5f; // an outlier: one piece gets a coarse d, the others keep theirs
        var expected = new float[n * outDim];
        var magnitude = new double[n * outDim];
        Sparse24MatMul.ReferenceInt8(matrix, x, expected, magnitude, n);
        var actual = new float[n * outDim];
        Array.Fill(actual, float.NaN);
        Sparse24MatMul.Multiply(matrix, x, actual, n, WorkerPool.Shared, threads);
        // Integer sums are exact on both sides. The kernel rounds each lane's (exact) integer times scale·d into a
        // running float sum, one FMA per block, then sums 16 lanes: at most blocks + 5 roundings of 2^-24 relative to
        // Σ|terms|. A wrong code, place, zero or scale moves y by the order of a term itself.
        double bound = (matrix.Blocks + 5) * Math.Pow(2, -24);
        for (int i = 0; i < actual.Length; i++)
            Assert.True(Math.Abs(actual[i] - expected[i]) <= bound * magnitude[i] + 1e-30, $"y[{i / outDim}, {i % outDim}] = {actual[i]}, reference {expected[i]}");
    }

    [Theory]
    [MemberData(nameof(DecodeCases))]
    public void Decode_stays_within_activation_rounding_of_the_exact_product(int inDim, int outDim, int groupSize, int n, int threads)
    {
        var random = new Random(inDim * 11 + outDim + groupSize + n);
        var s = RandomSparse(random, inDim, outDim, groupSize);
        var matrix = s.Build();
        var x = RandomVector(random, n * inDim);
        var expected = new float[n * outDim];
        Sparse24MatMul.MultiplyReference(matrix, x, expected, n);
        var actual = new float[n * outDim];
        Sparse24MatMul.Multiply(matrix, x, actual, n, WorkerPool.Shared, threads);
        AssertWithinActivationRounding(s, matrix, x, expected, actual, n);
    }

    /// <summary>
    /// Each int8 activation is off by at most half its piece's step d = max|x over the piece|/127, so
    /// |y − exact| ≤ Σ_kept |w|·d/2, plus float rounding (relative to Σ|x·w|). The portable path is exact up to rounding.
    /// </summary>
    private static void AssertWithinActivationRounding(Sparse s, Sparse24Int4Matrix matrix, float[] x, float[] expected, float[] actual, int n)
    {
        var w = matrix.Dequantize();
        int piece = Math.Min(s.GroupSize, 128);
        for (int r = 0; r < n; r++)
        {
            var d = new double[(s.In + piece - 1) / piece];
            for (int i = 0; i < s.In; i++) d[i / piece] = Math.Max(d[i / piece], Math.Abs(x[r * s.In + i]) / 127.0);
            for (int o = 0; o < s.Out; o++)
            {
                double rounding = 0, magnitude = 0;
                for (int i = 0; i < s.In; i++)
                {
                    double weight = Math.Abs(w[o * s.In + i]);
                    rounding += weight * d[i / piece] / 2;
                    magnitude += weight * Math.Abs(x[r * s.In + i]);
                }
                int at = r * s.Out + o;
                Assert.True(Math.Abs(actual[at] - expected[at]) <= rounding * (1 + 1e-4) + (s.In / 16.0 + 9) * Math.Pow(2, -24) * magnitude,
                    $"y[{r}, {o}] = {actual[at]}, exact {expected[at]}, bound {rounding}");
            }
        }
    }

    public static TheoryData<int, int, int, int, int> PromptCases()
    {
        var cases = new TheoryData<int, int, int, int, int>();
        foreach (var shape in Shapes)
            foreach (int n in new[] { 17, 64 })
                foreach (int threads in new[] { 1, 2 })
                    cases.Add((int)shape[0], (int)shape[1], (int)shape[2], n, threads);
        cases.Add(1100 / 8 * 8, 70, 32, Sparse24MatMul.MaxDecodeRows + 1, 2); // several 1024-input slices of the tiled GEMM, a slice ending inside a block
        return cases;
    }

    [Theory]
    [MemberData(nameof(PromptCases))]
    public void Prompt_path_matches_the_reference(int inDim, int outDim, int groupSize, int n, int threads)
    {
        var random = new Random(inDim * 13 + outDim + groupSize + n);
        var matrix = RandomSparse(random, inDim, outDim, groupSize).Build();
        var x = RandomVector(random, n * inDim);
        var expected = new float[n * outDim];
        Sparse24MatMul.MultiplyReference(matrix, x, expected, n);
        foreach (bool vectorized in new[] { true, false })
        {
            var actual = new float[n * outDim];
            Array.Fill(actual, float.NaN);
            Sparse24MatMul.Multiply(matrix, x, actual, n, WorkerPool.Shared, threads, vectorized);
            AssertFloatRounding(matrix, x, expected, actual, n);
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public void Portable_decode_matches_the_reference(int n)
    {
        var random = new Random(n);
        var matrix = RandomSparse(random, 384, 13, 64).Build();
        var x = RandomVector(random, n * 384);
        var expected = new float[n * 13];
        Sparse24MatMul.MultiplyReference(matrix, x, expected, n);
        var actual = new float[n * 13];
        Sparse24MatMul.Multiply(matrix, x, actual, n, WorkerPool.Shared, 2, vectorized: false);
        AssertFloatRounding(matrix, x, expected, actual, n);
    }

    /// <summary>
    /// The float paths multiply the exact Ŵ (decoded tiles equal Dequantize) and sum in float: 16-lane chains of in/16
    /// FMAs, a 16-to-1 sum and one addition per 1024-input slice, so |error| ≤ (in/16 + 9)·2^-24·Σ|x·w| (first order,
    /// the reference's own final rounding included).
    /// </summary>
    private static void AssertFloatRounding(Sparse24Int4Matrix matrix, float[] x, float[] expected, float[] actual, int n)
    {
        var w = matrix.Dequantize();
        double bound = (matrix.InDim / 16.0 + 9) * Math.Pow(2, -24);
        for (int r = 0; r < n; r++)
            for (int o = 0; o < matrix.OutDim; o++)
            {
                double magnitude = 0;
                for (int i = 0; i < matrix.InDim; i++) magnitude += Math.Abs(x[r * matrix.InDim + i] * w[o * matrix.InDim + i]);
                int at = r * matrix.OutDim + o;
                Assert.True(Math.Abs(actual[at] - expected[at]) <= bound * magnitude + 1e-30, $"y[{r}, {o}] = {actual[at]}, reference {expected[at]}");
            }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(8)]
    [InlineData(17)]
    public void One_and_two_threads_give_the_same_result(int n)
    {
        var random = new Random(40 + n);
        var matrix = RandomSparse(random, 512, 70, 128).Build();
        var x = RandomVector(random, n * 512);
        float[] one = new float[n * 70], two = new float[n * 70];
        Sparse24MatMul.Multiply(matrix, x, one, n, WorkerPool.Shared, 1);
        Sparse24MatMul.Multiply(matrix, x, two, n, WorkerPool.Shared, 2);
        Assert.Equal(one, two);
    }

    [Fact]
    public void Weight_bytes_are_51_per_128_inputs_with_128_input_groups()
    {
        var matrix = RandomSparse(new Random(3), 2048, 64, 128).Build();
        Assert.Equal(64L * 2048 / 128 * (32 + 16 + 2 + 1), matrix.WeightBytes);
        var g32 = RandomSparse(new Random(3), 2048, 64, 32).Build();
        Assert.Equal(64L * 2048 / 128 * (32 + 16) + 64L * 2048 / 32 * 3, g32.WeightBytes);
    }

    /// <summary>The kernel's float16 → float conversion, on every finite bit pattern, against Half's own.</summary>
    [Fact]
    public unsafe void Float16_conversion_is_exact_for_every_finite_value()
    {
        if (!System.Runtime.Intrinsics.X86.Avx512F.IsSupported) return;
        var bits = new short[16];
        for (int start = 0; start < 65536; start += 16)
        {
            for (int k = 0; k < 16; k++) bits[k] = (short)(start + k);
            var converted = Sparse24MatMul.HalfToSingle(Vector256.Create(bits));
            for (int k = 0; k < 16; k++)
            {
                var half = BitConverter.Int16BitsToHalf(bits[k]);
                if (!Half.IsFinite(half)) continue;
                Assert.Equal(BitConverter.SingleToInt32Bits((float)half), BitConverter.SingleToInt32Bits(converted[k]));
            }
        }
    }
}
