using LlmShrink.Training;
using Xunit;
using static LlmShrink.Tests.GradientCheck;

namespace LlmShrink.Tests;

/// <summary><see cref="Transpose.Apply"/> (16×16 register blocks on the worker pool) against its scalar definition, bit for bit.</summary>
public class TransposeTests
{
    [Theory]
    [InlineData(16, 16)]
    [InlineData(64, 48)]
    [InlineData(37, 53)]   // ragged rows and columns
    [InlineData(256, 7)]   // narrower than one strip
    [InlineData(5, 300)]   // shorter than one block
    [InlineData(4096, 32)] // a power-of-two destination stride, as for the token axis of training
    public void Matches_the_scalar_transpose(int rows, int cols)
    {
        var source = RandomFloats(new Random(rows * 1000 + cols), rows * cols);
        float[] actual = new float[rows * cols + 3], expected = new float[rows * cols + 3]; // longer than needed: nothing past rows·cols is written
        Transpose.Apply(source, rows, cols, actual);
        Transpose.Reference(source, rows, cols, expected);
        Assert.Equal(expected, actual);
    }
}
