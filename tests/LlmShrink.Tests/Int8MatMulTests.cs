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
        var random = new Random(n + inDim + outDim);
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

        var layer = new W8A8Linear(inDim, outDim, w, scales, smoothing, bias);
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

    [Fact]
    public void W8A8_rejects_wrong_sizes()
    {
        Assert.Throws<ArgumentException>(() => new W8A8Linear(4, 2, new sbyte[7], new float[2]));
        Assert.Throws<ArgumentException>(() => new W8A8Linear(4, 2, new sbyte[8], new float[3]));
        Assert.Throws<ArgumentException>(() => new W8A8Linear(4, 2, new sbyte[8], new float[2], smoothing: new float[3]));
    }
}
