using LlmShrink.Kernels;
using LlmShrink.Model;
using Xunit;

namespace LlmShrink.Tests;

public class QuantKernelTests
{
    internal sealed record Quantized(int Bits, int In, int Out, byte[] Codes, float[] Scales, int[] Zeros, int[] GroupIndex);

    internal static Quantized RandomQuantized(Random random, int bits, int inDim, int outDim, int groupSize, bool actOrder)
    {
        int groups = (inDim + groupSize - 1) / groupSize;
        var codes = new byte[outDim * inDim];
        for (int i = 0; i < codes.Length; i++) codes[i] = (byte)random.Next(1 << bits);
        var scales = new float[groups * outDim];
        var zeros = new int[groups * outDim];
        for (int i = 0; i < scales.Length; i++)
        {
            scales[i] = 0.001f + 0.05f * random.NextSingle();
            zeros[i] = random.Next(1, (1 << bits) + 1); // GPTQ v1 zero-points run 1 .. 2^bits
        }
        var groupIndex = GptqMatMul.SequentialGroups(inDim, groupSize);
        if (actOrder) random.Shuffle(groupIndex); // act_order: a group's inputs scattered over the row
        return new Quantized(bits, inDim, outDim, codes, scales, zeros, groupIndex);
    }

    internal static float[] RandomVector(Random random, int length)
    {
        var v = new float[length];
        for (int i = 0; i < length; i++) v[i] = 2 * random.NextSingle() - 1;
        return v;
    }

    /// <summary>Float rounding of a dot product is bounded relative to Σ|x·w|.</summary>
    private static void AssertClose(Quantized q, float[] x, float[] expected, float[] actual, int n, double relative = 2e-6)
    {
        for (int r = 0; r < n; r++)
            for (int o = 0; o < q.Out; o++)
            {
                double magnitude = 0;
                for (int i = 0; i < q.In; i++)
                {
                    int g = q.GroupIndex[i];
                    magnitude += Math.Abs(x[r * q.In + i] * (q.Codes[o * q.In + i] - q.Zeros[g * q.Out + o]) * q.Scales[g * q.Out + o]);
                }
                Assert.True(Math.Abs(actual[r * q.Out + o] - expected[r * q.Out + o]) <= relative * magnitude + 1e-30,
                    $"y[{r},{o}] = {actual[r * q.Out + o]}, reference {expected[r * q.Out + o]}");
            }
    }

    [Theory]
    [InlineData(4, 1, 256, 33, 128, false)]
    [InlineData(4, 8, 512, 20, 128, false)] // inputs in order: nibble rows packed 64 bytes at a time
    [InlineData(3, 4, 256, 10, 64, false)]
    [InlineData(4, 1, 256, 32, 128, true)]
    [InlineData(4, 1, 200, 7, 64, true)]   // ragged groups: padding inside the reordered axis
    [InlineData(4, 1, 172, 5, 172, false)] // one group per row, in not a multiple of 16
    [InlineData(4, 3, 384, 20, 32, true)]
    [InlineData(4, 19, 512, 40, 128, true)]
    [InlineData(3, 1, 256, 9, 128, true)]
    [InlineData(2, 1, 512, 9, 128, true)]
    [InlineData(2, 5, 300, 17, 100, false)]
    [InlineData(8, 1, 256, 33, 128, true)]
    [InlineData(8, 7, 160, 18, 32, false)]
    [InlineData(4, 70, 1100, 150, 128, true)] // several 512-input slices, x blocks of 64 rows, a ragged last tile
    [InlineData(8, 9, 640, 70, 64, false)]
    [InlineData(2, 6, 1024, 66, 128, false)]
    public void Gptq_matches_reference(int bits, int n, int inDim, int outDim, int groupSize, bool actOrder)
    {
        var random = new Random(bits * 7919 + n * 131 + inDim + outDim);
        var q = RandomQuantized(random, bits, inDim, outDim, groupSize, actOrder);
        var x = RandomVector(random, n * inDim);
        var expected = new float[n * outDim];
        GptqMatMul.Reference(inDim, outDim, q.Codes, q.Scales, q.Zeros, q.GroupIndex, x, expected, n);

        var kernel = new GptqMatMul(bits, inDim, outDim, q.Codes, q.Scales, q.Zeros, q.GroupIndex);
        foreach (bool vectorized in new[] { true, false })
        {
            kernel.Vectorized = vectorized && System.Runtime.Intrinsics.X86.Avx512F.IsSupported;
            var actual = new float[n * outDim];
            Array.Fill(actual, float.NaN); // must overwrite y
            kernel.Multiply(x, actual, n);
            if ((n == 1 || kernel.IntegerPrompt) && bits is 3 or 4 && kernel.Vectorized && System.Runtime.Intrinsics.X86.Avx512BW.IsSupported)
                for (int r = 0; r < n; r++) // decode of nibbles, and prompts of whole-block layers, run on int8 x
                    GptqInt8GemvTests.AssertWithinActivationRounding(q, x[(r * inDim)..((r + 1) * inDim)], expected[(r * outDim)..((r + 1) * outDim)], actual[(r * outDim)..((r + 1) * outDim)]);
            else AssertClose(q, x, expected, actual, n);
        }
    }

    [Fact]
    public void Gptq_single_thread_equals_pool()
    {
        var random = new Random(3);
        var q = RandomQuantized(random, 4, 256, 70, 64, true);
        var kernel = new GptqMatMul(4, 256, 70, q.Codes, q.Scales, q.Zeros, q.GroupIndex);
        foreach (int n in new[] { 1, 6 })
        {
            var x = RandomVector(random, n * 256);
            float[] one = new float[n * 70], all = new float[n * 70];
            kernel.Multiply(x, one, n, threads: 1);
            kernel.Multiply(x, all, n);
            Assert.Equal(one, all);
        }
    }

    /// <summary>Packs codes the way AutoGPTQ's v1 checkpoints do, to check the unpacking of qweight/qzeros.</summary>
    [Theory]
    [InlineData(4)]
    [InlineData(8)]
    [InlineData(2)]
    public void Gptq_v1_tensors_unpack_to_the_same_layer(int bits)
    {
        var random = new Random(bits);
        int inDim = 128, outDim = 32, groupSize = 32, perWord = 32 / bits, groups = inDim / groupSize;
        var q = RandomQuantized(random, bits, inDim, outDim, groupSize, actOrder: true);
        var qweight = new int[inDim / perWord * outDim];
        for (int o = 0; o < outDim; o++)
            for (int i = 0; i < inDim; i++)
                qweight[i / perWord * outDim + o] |= q.Codes[o * inDim + i] << (i % perWord * bits);
        var qzeros = new int[groups * outDim / perWord];
        var halfScales = new Half[groups * outDim];
        var roundedScales = new float[groups * outDim];
        for (int g = 0; g < groups; g++)
            for (int o = 0; o < outDim; o++)
            {
                int stored = (q.Zeros[g * outDim + o] - 1) & ((1 << bits) - 1); // v1 stores zero − 1
                qzeros[g * (outDim / perWord) + o / perWord] |= stored << (o % perWord * bits);
                halfScales[g * outDim + o] = (Half)q.Scales[g * outDim + o];
                roundedScales[g * outDim + o] = (float)halfScales[g * outDim + o];
            }

        var layer = GptqLinear.FromGptqV1(bits, inDim, outDim, qweight, qzeros, halfScales, q.GroupIndex, bias: null);
        // Two rows of x: the prompt path multiplies the dequantized weights in float, so the unpacking is checked tightly.
        var x = RandomVector(random, 2 * inDim);
        var expected = new float[2 * outDim];
        GptqMatMul.Reference(inDim, outDim, q.Codes, roundedScales, q.Zeros, q.GroupIndex, x, expected, 2);
        var actual = new float[2 * outDim];
        layer.Apply(x, actual, 2, WorkerPool.Shared, 0);
        AssertClose(q with { Scales = roundedScales }, x, expected, actual, 2);
    }

    [Fact]
    public void GptqLinear_adds_bias()
    {
        var random = new Random(9);
        var q = RandomQuantized(random, 4, 64, 8, 32, false);
        var bias = RandomVector(random, 8);
        var plain = new GptqLinear(4, 64, 8, q.Codes, q.Scales, q.Zeros, q.GroupIndex, null);
        var biased = new GptqLinear(4, 64, 8, q.Codes, q.Scales, q.Zeros, q.GroupIndex, bias);
        var x = RandomVector(random, 2 * 64);
        float[] a = new float[16], b = new float[16];
        plain.Apply(x, a, 2, WorkerPool.Shared, 0);
        biased.Apply(x, b, 2, WorkerPool.Shared, 0);
        for (int i = 0; i < 16; i++) Assert.Equal(a[i] + bias[i % 8], b[i]);
    }

    [Fact]
    public void Gptq_rejects_codes_that_do_not_fit()
    {
        var codes = new byte[16 * 2];
        codes[5] = 16;
        Assert.Throws<ArgumentException>(() => new GptqMatMul(4, 16, 2, codes, new float[2], new int[2], new int[16]));
        Assert.Throws<ArgumentException>(() => new GptqMatMul(4, 16, 2, new byte[32], new float[2], new int[2], Enumerable.Repeat(1, 16).ToArray()));
        // Inputs in order (whole 128-input blocks) take the vector packing, which must refuse the same way.
        var inOrder = new byte[128 * 2];
        inOrder[128 + 70] = 8;
        var error = Assert.Throws<ArgumentException>(() => new GptqMatMul(3, 128, 2, inOrder, new float[2], new int[2], new int[128]));
        Assert.Contains("[1, 70]", error.Message);
    }
}
