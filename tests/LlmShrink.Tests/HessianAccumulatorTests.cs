using LlmShrink.Compression.Quantization;
using Xunit;
using LlmShrink.LinearAlgebra;

namespace LlmShrink.Tests;

public class HessianAccumulatorTests
{
    /// <summary>(2/n) Σ x xᵀ in plain double loops.</summary>
    static double[] Reference(float[] x, int tokens, int columns)
    {
        var h = new double[columns * columns];
        for (int t = 0; t < tokens; t++)
            for (int i = 0; i < columns; i++)
                for (int j = 0; j < columns; j++)
                    h[i * columns + j] += (double)x[t * columns + i] * x[t * columns + j];
        for (int k = 0; k < h.Length; k++) h[k] *= 2.0 / tokens;
        return h;
    }

    [Theory]
    [InlineData(200, 300, 37)]   // columns not a tile multiple; a batch longer than one token block
    [InlineData(64, 17, 1)]
    [InlineData(300, 513, 256)]  // more than one column chunk
    public void MatchesScalarReference(int columns, int firstBatch, int secondBatch)
    {
        var x1 = QuantizationTestData.Activations(firstBatch, columns, seed: 3);
        var x2 = QuantizationTestData.Activations(secondBatch, columns, seed: 4);
        var acc = new HessianAccumulator(columns);
        acc.Add(x1, firstBatch);
        acc.Add(x2, secondBatch);
        Assert.Equal(firstBatch + secondBatch, acc.Tokens);
        var h = acc.ToHessian();
        var expected = Reference(x1.Concat(x2).ToArray(), firstBatch + secondBatch, columns);
        for (int k = 0; k < h.Length; k++)
        {
            int i = k / columns, j = k % columns;
            double tolerance = 1e-5 * Math.Sqrt(expected[i * columns + i] * expected[j * columns + j]) + 1e-9;
            Assert.True(Math.Abs(h[k] - expected[k]) <= tolerance, $"H[{i},{j}] = {h[k]}, expected {expected[k]}");
        }
    }

    [Fact]
    public void WrongInputLengthIsRejected()
    {
        var acc = new HessianAccumulator(8);
        Assert.Throws<ArgumentException>(() => acc.Add(new float[15], 2));
    }

    [Fact]
    public void ToHessianEndsTheAccumulation()
    {
        var acc = new HessianAccumulator(8);
        acc.Add(new float[16], 2);
        acc.ToHessian();
        Assert.Throws<InvalidOperationException>(() => acc.ToHessian());
        Assert.Throws<InvalidOperationException>(() => acc.Add(new float[16], 2));
    }
}
