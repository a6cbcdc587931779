using LlmShrink.Evaluation;
using Xunit;

namespace LlmShrink.Tests;

public class HardwareLimitsTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void MeasurementsArePositiveAndFinite(int threads)
    {
        var limits = HardwareLimits.Measure(threads, bufferBytes: 16 << 20, fmasPerThread: 1_000_000, repeats: 2);
        Assert.Equal(threads, limits.Threads);
        foreach (double value in new[] { limits.CopyGBps, limits.ReadGBps, limits.FmaGflops })
            Assert.True(double.IsFinite(value) && value > 0, $"{limits}");
        Assert.Throws<ArgumentOutOfRangeException>(() => HardwareLimits.Measure(0));
    }

    [Fact]
    public void BestKeepsTheHigherOfEachFigure()
    {
        var best = new HardwareLimits(2, 30, 20, 100).Best(new HardwareLimits(2, 25, 24, 90));
        Assert.Equal(new HardwareLimits(2, 30, 24, 100), best);
    }
}
