using LlmShrink.Formats;
using LlmShrink.Kernels;
using LlmShrink.Model;
using Xunit;

namespace LlmShrink.Tests;

public unsafe class GgmlLinearTests
{
    /// <summary>Random blocks: random code bytes with small finite fp16 scales (every bit pattern of the codes is valid).</summary>
    private static byte[] RandomBlocks(Random random, TensorType type, int inDim, int outDim)
    {
        int blockBytes = TensorTypes.BlockBytes(type);
        var bytes = new byte[TensorTypes.ByteCount(type, (long)inDim * outDim)];
        random.NextBytes(bytes);
        for (int b = 0; b < bytes.Length / blockBytes; b++)
        {
            var block = bytes.AsSpan(b * blockBytes, blockBytes);
            int scaleOffset = type == TensorType.Q6_K ? 208 : 0; // d leads every other block type; Q4_K's and Q5_K's dmin follows it
            BitConverter.TryWriteBytes(block[scaleOffset..], (Half)(0.002f + 0.02f * random.NextSingle()));
            if (type is TensorType.Q4_K or TensorType.Q5_K) BitConverter.TryWriteBytes(block[2..], (Half)(0.002f + 0.02f * random.NextSingle()));
        }
        return bytes;
    }

    private static float[] Dequantized(TensorType type, byte[] blocks, int inDim, int outDim)
    {
        var w = new float[inDim * outDim];
        GgmlBlocks.Dequantize(type, blocks, w);
        return w;
    }

    private static float[] RandomVector(Random random, int length)
    {
        var v = new float[length];
        for (int i = 0; i < length; i++) v[i] = 2 * random.NextSingle() - 1;
        return v;
    }

    public static TheoryData<TensorType, int, int, int> Shapes => new()
    {
        { TensorType.Q4_0, 1, 64, 5 }, { TensorType.Q4_0, 1, 1024, 37 }, { TensorType.Q4_0, 9, 256, 20 },
        { TensorType.Q8_0, 1, 96, 17 }, { TensorType.Q8_0, 1, 1024, 33 }, { TensorType.Q8_0, 6, 160, 18 },
        { TensorType.Q4_K, 1, 256, 7 }, { TensorType.Q4_K, 1, 1024, 40 }, { TensorType.Q4_K, 5, 512, 19 },
        { TensorType.Q5_K, 1, 256, 7 }, { TensorType.Q5_K, 1, 1024, 40 }, { TensorType.Q5_K, 5, 512, 19 },
        { TensorType.Q6_K, 1, 256, 7 }, { TensorType.Q6_K, 1, 1024, 40 }, { TensorType.Q6_K, 5, 512, 19 },
        { TensorType.IQ4_NL, 1, 64, 5 }, { TensorType.IQ4_NL, 1, 1024, 37 }, { TensorType.IQ4_NL, 9, 256, 20 },
        { TensorType.IQ4_XS, 1, 256, 7 }, { TensorType.IQ4_XS, 1, 1024, 40 }, { TensorType.IQ4_XS, 5, 512, 19 },
        { TensorType.IQ3_XXS, 1, 256, 7 }, { TensorType.IQ3_XXS, 1, 1024, 40 }, { TensorType.IQ3_XXS, 5, 512, 19 },
        { TensorType.IQ3_S, 1, 256, 7 }, { TensorType.IQ3_S, 1, 1024, 40 }, { TensorType.IQ3_S, 5, 512, 19 },
        { TensorType.IQ2_XXS, 1, 256, 7 }, { TensorType.IQ2_XXS, 1, 1024, 40 }, { TensorType.IQ2_XXS, 5, 512, 19 },
        { TensorType.IQ2_XS, 1, 256, 7 }, { TensorType.IQ2_XS, 1, 1024, 40 }, { TensorType.IQ2_XS, 5, 512, 19 },
        { TensorType.IQ2_S, 1, 256, 7 }, { TensorType.IQ2_S, 1, 1024, 40 }, { TensorType.IQ2_S, 5, 512, 19 },
        // Q4_0 decode pairs blocks (GgmlQ4_0Pairs.cs): rows of 1, 3, 5, 7 and 33 blocks leave an odd block, a lone pair or both.
        { TensorType.Q4_0, 1, 32, 5 }, { TensorType.Q4_0, 1, 96, 7 }, { TensorType.Q4_0, 1, 160, 9 }, { TensorType.Q4_0, 1, 224, 6 }, { TensorType.Q4_0, 1, 1056, 19 },
        // Integer prompts (Q4_0, Q8_0): whole groups of 16 W rows and 4 x rows only, then with leftovers of both — a
        // pass of 8 W rows after the 16s (24, 29) and single rows after them (19, 29).
        { TensorType.Q4_0, 4, 512, 16 }, { TensorType.Q8_0, 8, 256, 32 }, { TensorType.Q8_0, 9, 1088, 19 },
        { TensorType.Q4_0, 5, 256, 24 }, { TensorType.Q8_0, 6, 160, 29 },
        // Integer K-quant prompts (Q4_K, Q5_K, Q6_K): whole groups of 8 W rows and 4 x rows only, then leftovers of both (n mod 4 = 1, 2, 3; out mod 8 ≠ 0).
        { TensorType.Q4_K, 4, 512, 16 }, { TensorType.Q4_K, 9, 768, 21 }, { TensorType.Q4_K, 3, 256, 40 },
        { TensorType.Q5_K, 8, 256, 32 }, { TensorType.Q5_K, 7, 1024, 21 }, { TensorType.Q5_K, 2, 512, 9 },
        { TensorType.Q6_K, 4, 512, 16 }, { TensorType.Q6_K, 6, 768, 27 }, { TensorType.Q6_K, 3, 256, 40 },
        // Prompt tiles: several 512-element slices (the last one partial), more than one tile of 64 W rows.
        { TensorType.Q4_0, 7, 1568, 70 }, { TensorType.Q8_0, 3, 1088, 66 }, { TensorType.Q4_K, 4, 1280, 67 }, { TensorType.Q6_K, 4, 1280, 67 },
        { TensorType.IQ4_NL, 7, 1568, 70 }, { TensorType.IQ4_XS, 4, 1280, 67 }, { TensorType.IQ3_S, 4, 1280, 67 }, { TensorType.IQ2_S, 3, 1280, 66 },
    };

    /// <summary>
    /// The scalar path equals the integer definition exactly. The fast path equals it up to float rounding for one row
    /// (decode) and for the prompts of HasIntegerPrompt types (Q4_0, Q8_0, Q4_K, Q5_K, Q6_K with AVX-VNNI: int8
    /// activations too); other prompts multiply dequantized float tiles, so
    /// they equal the float product of x and the dequantized W up to float rounding.
    /// </summary>
    [Theory]
    [MemberData(nameof(Shapes))]
    public void Kernel_matches_integer_reference(TensorType type, int n, int inDim, int outDim)
    {
        var random = new Random((int)type * 1000 + n * 100 + inDim + outDim);
        var blocks = RandomBlocks(random, type, inDim, outDim);
        var x = RandomVector(random, n * inDim);
        int block = GgmlMatMul.ActivationBlock(type);
        int rowBytes = (int)TensorTypes.ByteCount(type, inDim);
        var w = Dequantized(type, blocks, inDim, outDim);

        var expected = new float[n * outDim];
        var magnitude = new double[n * outDim];
        var q = new sbyte[inDim];
        var scales = new float[inDim / block];
        var sums = new int[inDim / 32];
        for (int i = 0; i < n; i++)
        {
            QuantizeActivations.Quantize(x.AsSpan(i * inDim, inDim), block, q, scales, sums);
            for (int j = 0; j < outDim; j++)
            {
                expected[i * outDim + j] = GgmlMatMul.DotReference(type, blocks.AsSpan(j * rowBytes, rowBytes), q, scales, sums);
                for (int k = 0; k < inDim; k++) magnitude[i * outDim + j] += Math.Abs(w[j * inDim + k] * q[k] * scales[k / block]);
            }
        }

        var fast = new float[n * outDim];
        var scalar = new float[n * outDim];
        fixed (byte* pw = blocks)
        {
            GgmlMatMul.Multiply(type, x, pw, fast, n, inDim, outDim, WorkerPool.Shared, 0, vectorized: true);
            GgmlMatMul.Multiply(type, x, pw, scalar, n, inDim, outDim, WorkerPool.Shared, 0, vectorized: false);
        }
        Assert.Equal(expected, scalar);
        if (n > 1 && !GgmlMatMul.HasIntegerPrompt(type))
        {
            MatMul.Reference(x, w, expected, n, inDim, outDim);
            for (int i = 0; i < n; i++)
                for (int j = 0; j < outDim; j++)
                {
                    magnitude[i * outDim + j] = 0;
                    for (int k = 0; k < inDim; k++) magnitude[i * outDim + j] += Math.Abs(w[j * inDim + k] * x[i * inDim + k]);
                }
        }
        for (int k = 0; k < expected.Length; k++)
            Assert.True(Math.Abs(fast[k] - expected[k]) <= 1e-5 * magnitude[k], $"y[{k}] = {fast[k]}, reference {expected[k]}");
    }

    /// <summary>
    /// Against the dequantized float32 product: the only extra error is x's rounding to int8, at most half an
    /// activation step d_x/2 per element, so |Δy| ≤ Σ |w_k|·d_x(k)/2 (plus float rounding).
    /// </summary>
    [Theory]
    [MemberData(nameof(Shapes))]
    public void Layer_matches_dequantized_float_product(TensorType type, int n, int inDim, int outDim)
    {
        var random = new Random((int)type * 7 + n * 3 + inDim + outDim);
        var blocks = RandomBlocks(random, type, inDim, outDim);
        var x = RandomVector(random, n * inDim);
        var w = Dequantized(type, blocks, inDim, outDim);
        var expected = new float[n * outDim];
        MatMul.Reference(x, w, expected, n, inDim, outDim);

        var layer = new GgmlLinear(type, blocks, inDim, outDim, bias: null);
        var actual = new float[n * outDim];
        Array.Fill(actual, float.NaN);
        layer.Apply(x, actual, n, WorkerPool.Shared, 0);

        int block = GgmlMatMul.ActivationBlock(type);
        for (int i = 0; i < n; i++)
        {
            var step = new float[inDim / block];
            for (int b = 0; b < step.Length; b++)
                step[b] = System.Numerics.Tensors.TensorPrimitives.MaxMagnitude(x.AsSpan(i * inDim + b * block, block)) is var m ? Math.Abs(m) / 127f : 0;
            for (int j = 0; j < outDim; j++)
            {
                double bound = 0, magnitude = 0;
                for (int k = 0; k < inDim; k++)
                {
                    bound += Math.Abs(w[j * inDim + k]) * step[k / block] / 2;
                    magnitude += Math.Abs(w[j * inDim + k] * x[i * inDim + k]);
                }
                float error = Math.Abs(actual[i * outDim + j] - expected[i * outDim + j]);
                Assert.True(error <= bound * 1.001 + 1e-5 * magnitude, $"y[{i},{j}] = {actual[i * outDim + j]}, float product {expected[i * outDim + j]}, bound {bound}");
            }
        }
    }

    public static TheoryData<TensorType, int, int, int> KQuantPromptShapes => new()
    {
        { TensorType.Q4_K, 8, 512, 16 }, { TensorType.Q4_K, 9, 768, 19 }, { TensorType.Q5_K, 4, 512, 16 }, { TensorType.Q5_K, 7, 768, 35 },
        { TensorType.Q6_K, 8, 512, 16 }, { TensorType.Q6_K, 6, 768, 27 }, { TensorType.Q6_K, 5, 256, 9 },
    };

    /// <summary>
    /// The integer parts of the K-quant prompt kernels, exactly: with every fp16 scale (d, dmin) 1 and each 256 inputs
    /// of x whole numbers with one ±127 (so d_x = 1 and q = x), every float the kernel adds is a whole number, and the
    /// precondition below keeps all of them and every partial sum under 2²⁴, where float is still exact. The product
    /// must then equal the scalar integer definition to the last bit, whatever the order of summation (and whichever
    /// path the CPU takes: without AVX-VNNI the float tiles' products are whole numbers under 2²⁴ too).
    /// </summary>
    [Theory]
    [MemberData(nameof(KQuantPromptShapes))]
    public void KQuant_prompt_integer_sums_are_exact(TensorType type, int n, int inDim, int outDim)
    {
        var random = new Random((int)type * 31 + n * 7 + inDim + outDim);
        var blocks = RandomBlocks(random, type, inDim, outDim);
        int blockBytes = TensorTypes.BlockBytes(type);
        for (int b = 0; b < blocks.Length / blockBytes; b++)
        {
            var block = blocks.AsSpan(b * blockBytes, blockBytes);
            BitConverter.TryWriteBytes(block[(type == TensorType.Q6_K ? 208 : 0)..], (Half)1);
            if (type != TensorType.Q6_K) BitConverter.TryWriteBytes(block[2..], (Half)1);
        }
        var x = new float[n * inDim];
        for (int k = 0; k < x.Length; k++) x[k] = random.Next(-4, 5);
        for (int b = 0; b < x.Length / 256; b++) x[256 * b + random.Next(256)] = random.Next(2) == 0 ? 127 : -127;

        // Σ|terms| ≤ Σ|x|·(max |code·scale| + max min): Q4_K 15·63 + 63, Q5_K 31·63 + 63, Q6_K 32·128.
        int largestWeight = type switch { TensorType.Q4_K => 15 * 63 + 63, TensorType.Q5_K => 31 * 63 + 63, _ => 32 * 128 };
        for (int i = 0; i < n; i++)
        {
            double absolute = 0;
            for (int k = 0; k < inDim; k++) absolute += Math.Abs(x[i * inDim + k]);
            Assert.True(absolute * largestWeight < 1 << 24, "the shape is too large for exact float sums");
        }

        int rowBytes = (int)TensorTypes.ByteCount(type, inDim);
        var expected = new float[n * outDim];
        var q = new sbyte[inDim];
        var scales = new float[inDim / 256];
        var sums = new int[inDim / 32];
        for (int i = 0; i < n; i++)
        {
            QuantizeActivations.Quantize(x.AsSpan(i * inDim, inDim), 256, q, scales, sums);
            Assert.All(scales, s => Assert.Equal(1f, s));
            for (int j = 0; j < outDim; j++) expected[i * outDim + j] = GgmlMatMul.DotReference(type, blocks.AsSpan(j * rowBytes, rowBytes), q, scales, sums);
        }
        var actual = new float[n * outDim];
        fixed (byte* pw = blocks) GgmlMatMul.Multiply(type, x, pw, actual, n, inDim, outDim, WorkerPool.Shared, 0, vectorized: true);
        Assert.Equal(expected, actual);
    }

    [Fact]
    public void Activation_quantization_rounds_to_the_nearest_step()
    {
        float[] x = [0.5f, -1.27f, 0.006f, 0.0f, 1.0f, -0.3f, 0.7f, 0.1f];
        var q = new sbyte[8];
        var scales = new float[2];
        QuantizeActivations.Quantize(x, 4, q, scales, default);
        Assert.Equal(1.27f / 127f, scales[0]);
        Assert.Equal(1.0f / 127f, scales[1]);
        Assert.Equal(new sbyte[] { 50, -127, 1, 0, 127, -38, 89, 13 }, q); // 0.7·127 = 88.9, 0.1·127 = 12.7
    }

    /// <summary>The vector Σq per 32 (the K-quant minimum terms, Q4_0/Q8_0 offsets) against the plain sum of the codes, extremes included.</summary>
    [Fact]
    public void Activation_sums_per_32_are_the_sums_of_the_codes()
    {
        var random = new Random(5);
        var x = RandomVector(random, 1024);
        for (int k = 0; k < 64; k++) x[k] = 1f;   // a block of +127 everywhere
        for (int k = 64; k < 96; k++) x[k] = -1f; // and of −127 (with the 1 s above, each 256-block's max is 1)
        var q = new sbyte[x.Length];
        var scales = new float[x.Length / 256];
        var sums = new int[x.Length / 32];
        QuantizeActivations.Quantize(x, 256, q, scales, sums);
        for (int s = 0; s < sums.Length; s++)
        {
            int expected = 0;
            for (int k = 0; k < 32; k++) expected += q[32 * s + k];
            Assert.Equal(expected, sums[s]);
        }
        Assert.Equal(32 * 127, sums[0]);
        Assert.Equal(-32 * 127, sums[2]);
    }

    [Fact]
    public void FromStored_keeps_supported_blocks_and_decodes_the_rest()
    {
        using var dir = new TempDir();
        var random = new Random(11);
        int inDim = 256, outDim = 4;
        var q4k = RandomBlocks(random, TensorType.Q4_K, inDim, outDim);
        var q41 = new byte[TensorTypes.ByteCount(TensorType.Q4_1, inDim * outDim)];
        random.NextBytes(q41);
        for (int b = 0; b < q41.Length; b += 20) { BitConverter.TryWriteBytes(q41.AsSpan(b), (Half)0.01f); BitConverter.TryWriteBytes(q41.AsSpan(b + 2), (Half)(-0.05f)); }
        string path = dir.File("weights.bin");
        File.WriteAllBytes(path, [.. q4k, .. q41]);
        using var file = new MappedFile(path);
        var kept = Linear.FromStored(new StoredTensor("a", [outDim, inDim], TensorType.Q4_K, file, 0), null, outDim, inDim);
        var decoded = Linear.FromStored(new StoredTensor("b", [outDim, inDim], TensorType.Q4_1, file, q4k.Length), null, outDim, inDim);
        Assert.IsType<GgmlLinear>(kept);
        Assert.IsType<DenseLinear>(decoded);

        var x = RandomVector(random, inDim);
        var y = new float[outDim];
        var expected = new float[outDim];
        kept.Apply(x, y, 1, WorkerPool.Shared, 0);
        MatMul.Reference(x, Dequantized(TensorType.Q4_K, q4k, inDim, outDim), expected, 1, inDim, outDim);
        for (int j = 0; j < outDim; j++) Assert.True(Math.Abs(y[j] - expected[j]) < 0.02 * (1 + Math.Abs(expected[j])), $"{y[j]} vs {expected[j]}");
    }

    [Fact]
    public void Rejects_wrong_sizes()
    {
        Assert.Throws<ArgumentException>(() => new GgmlLinear(TensorType.Q4_0, new byte[17], 32, 1, null));
        Assert.Throws<ArgumentException>(() => new GgmlLinear(TensorType.Q4_1, new byte[20], 32, 1, null)); // no direct kernel
    }
}
