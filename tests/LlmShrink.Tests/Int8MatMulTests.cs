using LlmShrink.Kernels;
using LlmShrink.Model;
using Xunit;

namespace LlmShrink.Tests;

public unsafe class Int8MatMulTests
{
    private static sbyte[] RandomBytes(Random random, int length)
    {
        var v = new sbyte[length];
        for (int i = 0; i < length; i++) v[i] = (sbyte)random.Next(-128, 128);
        return v;
    }

    [Theory]
    [InlineData(1, 7, 5)]
    [InlineData(1, 32, 4)]
    [InlineData(1, 2050, 37)]
    [InlineData(3, 64, 9)]
    [InlineData(4, 100, 8)]
    [InlineData(9, 1100, 21)]
    [InlineData(70, 96, 19)]
    [InlineData(75, 2100, 23)]  // two x blocks, two in slices (the second ragged), out not a multiple of 4 or 16
    [InlineData(13, 4133, 18)]  // three tiles and a leftover row, three slices
    [InlineData(6, 64, 16)]     // rows fewer than a block, in an exact number of vectors
    public void Int8_matmul_is_exact(int n, int inDim, int outDim)
    {
        var random = new Random(n * 31 + inDim * 7 + outDim);
        var x = RandomBytes(random, n * inDim);
        var w = RandomBytes(random, outDim * inDim);
        w[0] = -128; x[0] = -128; // the extremes: -128·-128 must not saturate
        var expected = new int[n * outDim];
        Int8MatMul.Reference(x, w, expected, n, inDim, outDim);
        var actual = new int[n * outDim];
        Array.Fill(actual, 12345); // must overwrite y
        fixed (sbyte* pw = w) Int8MatMul.Multiply(x, pw, actual, n, inDim, outDim);
        Assert.Equal(expected, actual);
        var single = new int[n * outDim];
        fixed (sbyte* pw = w) Int8MatMul.Multiply(x, pw, single, n, inDim, outDim, threads: 1);
        Assert.Equal(expected, single);
    }

    /// <summary>
    /// Against float: y = x·(s_w ⊙ W)ᵀ. Activation rounding moves each x̃_k by at most s_x/2, so
    /// |Δy_o| ≤ Σ_k |W̃[o,k]|·s_x/2 where W̃ = s_w·W/smoothing is the effective float weight.
    /// </summary>
    [Theory]
    [InlineData(1, 64, 9, false)]
    [InlineData(5, 200, 17, true)]
    public void W8A8_layer_matches_float_within_activation_rounding(int n, int inDim, int outDim, bool smooth)
    {
        var (layer, w, scales, smoothing, bias, x) = RandomW8A8(new Random(n + inDim + outDim), n, inDim, outDim, smooth);
        var y = new float[n * outDim];
        layer.Apply(x, y, n, WorkerPool.Shared, 0);

        for (int r = 0; r < n; r++)
        {
            float amax = 0;
            for (int k = 0; k < inDim; k++) amax = Math.Max(amax, Math.Abs(x[r * inDim + k] / (smoothing?[k] ?? 1)));
            double step = amax / 127.0;
            for (int o = 0; o < outDim; o++)
            {
                double exact = bias[o], bound = 0;
                for (int k = 0; k < inDim; k++)
                {
                    double effective = scales[o] * w[o * inDim + k];
                    exact += x[r * inDim + k] / (smoothing?[k] ?? 1) * effective;
                    bound += Math.Abs(effective) * step / 2;
                }
                Assert.True(Math.Abs(y[r * outDim + o] - exact) <= bound * 1.001 + 1e-5, $"y[{r},{o}] = {y[r * outDim + o]}, float {exact}, bound {bound}");
            }
        }
    }

    /// <summary>A W8A8 layer with random int8 weights, scales, optional smoothing and bias, and n random input rows.</summary>
    private static (W8A8Linear Layer, sbyte[] W, float[] Scales, float[]? Smoothing, float[] Bias, float[] X) RandomW8A8(
        Random random, int n, int inDim, int outDim, bool smooth)
    {
        var w = RandomBytes(random, outDim * inDim);
        var scales = new float[outDim];
        for (int o = 0; o < outDim; o++) scales[o] = 0.001f + 0.01f * random.NextSingle();
        float[]? smoothing = null;
        if (smooth)
        {
            smoothing = new float[inDim];
            for (int i = 0; i < inDim; i++) smoothing[i] = 0.5f + 2 * random.NextSingle();
        }
        var bias = new float[outDim];
        for (int o = 0; o < outDim; o++) bias[o] = random.NextSingle();
        var x = new float[n * inDim];
        for (int i = 0; i < x.Length; i++) x[i] = 4 * random.NextSingle() - 2;
        return (new W8A8Linear(inDim, outDim, w, scales, smoothing, bias), w, scales, smoothing, bias, x);
    }

    /// <summary>The vector rounding must reproduce MathF.Round(·, AwayFromZero) bit for bit, ties included.</summary>
    [Theory]
    [InlineData(2048, 2048)]
    [InlineData(37, 37)]   // two vectors and a scalar tail
    [InlineData(256, 32)]  // Q8_0 blocks
    public void Vector_activation_quantization_matches_the_scalar_reference(int length, int blockSize)
    {
        var random = new Random(length + blockSize);
        var x = new float[length];
        for (int i = 0; i < length; i++) x[i] = (float)(random.NextDouble() * 6 - 3);
        // Block 0 with max|x| = 127 has d = 1 exactly, so these land on ties (and on ±127 itself).
        x[0] = 127f;
        for (int i = 1; i < Math.Min(blockSize, 12); i++) x[i] = (i % 2 == 0 ? 1 : -1) * (i * 10 + 0.5f);
        if (length / blockSize > 1) Array.Clear(x, blockSize, blockSize); // an all-zero block: d = 0, q = 0
        var q = new sbyte[length];
        var scales = new float[length / blockSize];
        QuantizeActivations.Quantize(x, blockSize, q, scales, default);
        var expected = new sbyte[blockSize];
        for (int b = 0; b < length / blockSize; b++)
        {
            float d = QuantizeActivations.Reference(x.AsSpan(b * blockSize, blockSize), expected);
            Assert.Equal(d, scales[b]);
            Assert.Equal(expected, q.AsSpan(b * blockSize, blockSize).ToArray());
        }
        Assert.Equal(127, q[0]);
        if (blockSize >= 4) Assert.Equal(new sbyte[] { -11, 21, -31 }, q.AsSpan(1, 3).ToArray()); // ties go away from zero
    }

    /// <summary>Many rows take the threaded quantize / rescale path; it must agree with one row at a time.</summary>
    [Fact]
    public void W8A8_rows_in_one_call_match_rows_one_by_one()
    {
        const int n = 37, inDim = 96, outDim = 40;
        var (layer, _, _, _, _, x) = RandomW8A8(new Random(5), n, inDim, outDim, smooth: true);
        var all = new float[n * outDim];
        layer.Apply(x, all, n, WorkerPool.Shared, 0);
        var one = new float[outDim];
        for (int r = 0; r < n; r++)
        {
            layer.Apply(x.AsSpan(r * inDim, inDim), one, 1, WorkerPool.Shared, 1);
            Assert.Equal(one, all.AsSpan(r * outDim, outDim).ToArray());
        }
    }

    [Fact]
    public void W8A8_rejects_wrong_sizes()
    {
        Assert.Throws<ArgumentException>(() => new W8A8Linear(4, 2, new sbyte[7], new float[2]));
        Assert.Throws<ArgumentException>(() => new W8A8Linear(4, 2, new sbyte[8], new float[3]));
        Assert.Throws<ArgumentException>(() => new W8A8Linear(4, 2, new sbyte[8], new float[2], smoothing: new float[3]));
    }
}
