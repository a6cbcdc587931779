using System.Runtime.Intrinsics.X86;
using LlmShrink.Kernels;
using Xunit;
using static LlmShrink.Tests.QuantKernelTests;

namespace LlmShrink.Tests;

/// <summary>Decode (n = 1) of 3- and 4-bit GPTQ codes through int8 activations (Kernels/GptqInt8Gemv.cs).</summary>
public class GptqInt8GemvTests
{
    public static TheoryData<int, int, int, int, bool> Shapes => new()
    {
        { 4, 256, 33, 128, false },
        { 4, 384, 7, 128, true },
        { 3, 384, 9, 128, true },
        { 4, 320, 9, 64, true },
        { 3, 320, 13, 64, false },
        { 4, 320, 11, 32, true },
        { 3, 256, 5, 32, true },
        { 4, 200, 5, 64, true },    // ragged groups: padding steps inside the reordered axis
        { 3, 1000, 11, 128, true }, // in not a multiple of 128: the last block is partly padding
        { 4, 960, 6, 48, false },   // groups of 3 steps: pieces cross the low/high nibble halves of a block
        { 4, 1024, 19, 1024, false }, // one group over 8 blocks
        { 4, 172, 3, 172, false },  // one group per row, in not a multiple of 16
        { 3, 640, 10, 80, true },
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Int8_decode_matches_its_scalar_reference(int bits, int inDim, int outDim, int groupSize, bool actOrder)
    {
        if (!Avx512BW.IsSupported) return; // the kernel under test needs AVX-512 BW
        var random = new Random(bits * 31 + inDim * 7 + outDim + groupSize);
        var q = RandomQuantized(random, bits, inDim, outDim, groupSize, actOrder);
        var kernel = new GptqMatMul(bits, inDim, outDim, q.Codes, q.Scales, q.Zeros, q.GroupIndex);
        var x = RandomVector(random, inDim);
        x[random.Next(inDim)] = 7.5f; // an outlier: one piece gets a coarse d, the others keep theirs
        var expected = new float[outDim];
        var magnitude = new double[outDim];
        kernel.ReferenceInt8(q.Codes, x, expected, magnitude);
        var actual = new float[outDim];
        Array.Fill(actual, float.NaN);
        kernel.Multiply(x, actual, 1);
        // Integer sums are exact on both sides; what remains is float rounding of the per-piece products and of the
        // lane sums (a few dozen roundings of 2^-24 each, relative to Σ|terms|). An error in any code, activation or
        // Σq would be of the order of the terms themselves.
        for (int o = 0; o < outDim; o++)
            Assert.True(Math.Abs(actual[o] - expected[o]) <= 1e-6 * magnitude[o] + 1e-30, $"y[{o}] = {actual[o]}, reference {expected[o]}");
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Int8_decode_stays_within_activation_rounding_of_the_exact_product(int bits, int inDim, int outDim, int groupSize, bool actOrder)
    {
        var random = new Random(bits * 17 + inDim * 3 + outDim + groupSize);
        var q = RandomQuantized(random, bits, inDim, outDim, groupSize, actOrder);
        var kernel = new GptqMatMul(bits, inDim, outDim, q.Codes, q.Scales, q.Zeros, q.GroupIndex);
        var x = RandomVector(random, inDim);
        var expected = new float[outDim];
        GptqMatMul.Reference(inDim, outDim, q.Codes, q.Scales, q.Zeros, q.GroupIndex, x, expected, 1);
        var actual = new float[outDim];
        kernel.Multiply(x, actual, 1);
        AssertWithinActivationRounding(q, x, expected, actual);

        // On x uniform in [−1, 1] the rounding error of q is uniform in ±d/2 with d ≈ 1/127, i.e. 0.23 % of an
        // activation's rms (0.58), and it adds up like x itself does, so ‖error‖ ≈ 0.4 % of ‖y‖; 1 % leaves room for
        // small shapes, and is far below what a wrong code or scale would give (tens of percent).
        double error = 0, norm = 0;
        for (int o = 0; o < outDim; o++)
        {
            error += Math.Pow(actual[o] - expected[o], 2);
            norm += Math.Pow(expected[o], 2);
        }
        Assert.True(Math.Sqrt(error / norm) < 1e-2, $"relative error {Math.Sqrt(error / norm):E2}");
    }

    /// <summary>
    /// Prompts (n &gt; 1) of layers whose blocks are whole groups run decode's int8 arithmetic on 8 interleaved rows
    /// (Kernels/GptqInt8Gemm.cs): each row of y equals decode's scalar reference for that row of x, up to float rounding.
    /// Shapes: 4 x rows and a leftover, act-order, 3-bit codes, a group over 2 and over 8 blocks.
    /// </summary>
    [Theory]
    [InlineData(4, 256, 16, 128, false, 6)]
    [InlineData(4, 384, 24, 128, true, 4)]
    [InlineData(3, 512, 8, 256, false, 9)]
    [InlineData(4, 1024, 40, 1024, false, 3)]
    public void Int8_prompt_matches_the_decode_reference_row_by_row(int bits, int inDim, int outDim, int groupSize, bool actOrder, int n)
    {
        if (!Avx512BW.IsSupported || !AvxVnni.IsSupported) return; // the kernel under test needs both
        var random = new Random(bits * 13 + inDim * 5 + outDim + groupSize + n);
        var q = RandomQuantized(random, bits, inDim, outDim, groupSize, actOrder);
        var kernel = new GptqMatMul(bits, inDim, outDim, q.Codes, q.Scales, q.Zeros, q.GroupIndex);
        var x = RandomVector(random, n * inDim);
        var actual = new float[n * outDim];
        Array.Fill(actual, float.NaN);
        kernel.Multiply(x, actual, n);
        var expected = new float[outDim];
        var magnitude = new double[outDim];
        for (int i = 0; i < n; i++)
        {
            kernel.ReferenceInt8(q.Codes, x.AsSpan(i * inDim, inDim), expected, magnitude);
            for (int o = 0; o < outDim; o++)
                Assert.True(Math.Abs(actual[i * outDim + o] - expected[o]) <= 1e-6 * magnitude[o] + 1e-30, $"y[{i}, {o}] = {actual[i * outDim + o]}, reference {expected[o]}");
        }
    }

    /// <summary>
    /// Each int8 activation is off by at most half its piece's step d ≤ max|x|/127, so |y − exact| ≤ Σ|w|·max|x|/254,
    /// plus float rounding (relative to Σ|x·w|).
    /// </summary>
    internal static void AssertWithinActivationRounding(Quantized q, float[] x, float[] expected, float[] actual)
    {
        float amax = 0;
        foreach (float v in x) amax = Math.Max(amax, Math.Abs(v));
        for (int o = 0; o < q.Out; o++)
        {
            double weights = 0, magnitude = 0;
            for (int i = 0; i < q.In; i++)
            {
                int g = q.GroupIndex[i];
                double w = Math.Abs((q.Codes[o * q.In + i] - q.Zeros[g * q.Out + o]) * q.Scales[g * q.Out + o]);
                weights += w;
                magnitude += Math.Abs(x[i]) * w;
            }
            Assert.True(Math.Abs(actual[o] - expected[o]) <= weights * amax / 254 + 2e-6 * magnitude,
                $"y[{o}] = {actual[o]}, exact {expected[o]}, bound {weights * amax / 254}");
        }
    }
}
