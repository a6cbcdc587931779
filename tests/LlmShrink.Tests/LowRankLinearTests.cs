using LlmShrink.Kernels;
using LlmShrink.Model;
using Xunit;

namespace LlmShrink.Tests;

public class LowRankLinearTests
{
    [Theory]
    [InlineData(1, 64, 48, 8)]
    [InlineData(7, 130, 33, 5)]
    [InlineData(3, 16, 16, 16)]
    public void Low_rank_layer_equals_the_dense_product(int n, int inDim, int outDim, int rank)
    {
        var random = new Random(n + inDim + outDim + rank);
        float[] Random(int length) { var a = new float[length]; for (int i = 0; i < length; i++) a[i] = 2 * random.NextSingle() - 1; return a; }
        var u = Random(outDim * rank);
        var v = Random(rank * inDim);
        var bias = Random(outDim);
        var x = Random(n * inDim);

        // The dense weight W = U·V, multiplied the plain way.
        var w = new float[outDim * inDim];
        for (int o = 0; o < outDim; o++)
            for (int i = 0; i < inDim; i++)
            {
                double sum = 0;
                for (int r = 0; r < rank; r++) sum += (double)u[o * rank + r] * v[r * inDim + i];
                w[o * inDim + i] = (float)sum;
            }
        var expected = new float[n * outDim];
        MatMul.Reference(x, w, expected, n, inDim, outDim);

        var layer = new LowRankLinear(inDim, outDim, rank, u, v, bias);
        var actual = new float[n * outDim];
        layer.Apply(x, actual, n, WorkerPool.Shared, 0);
        for (int k = 0; k < expected.Length; k++)
        {
            // Two float products: error relative to Σ|u|·|v|·|x| over the rank and the input.
            double magnitude = 0;
            int row = k / outDim, o = k % outDim;
            for (int r = 0; r < rank; r++)
                for (int i = 0; i < inDim; i++) magnitude += Math.Abs(u[o * rank + r] * v[r * inDim + i] * x[row * inDim + i]);
            Assert.True(Math.Abs(actual[k] - bias[o] - expected[k]) <= 1e-5 * magnitude, $"y[{k}] = {actual[k]}, dense {expected[k] + bias[o]}");
        }
        Assert.Equal(rank, layer.Rank);
    }

    [Fact]
    public void Low_rank_rejects_wrong_sizes()
    {
        Assert.Throws<ArgumentException>(() => new LowRankLinear(4, 3, 2, new float[5], new float[8]));
        Assert.Throws<ArgumentException>(() => new LowRankLinear(4, 3, 2, new float[6], new float[9]));
    }
}
