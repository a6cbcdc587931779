using LlmShrink.Compression;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>
/// A trial's copy of a site's statistics shares the Hessian and its whitening with the original until either side changes
/// or consumes H (so trials that only read it copy nothing), and neither side ever sees what the other did.
/// </summary>
public class SiteStatisticsCopyTests
{
    [Fact]
    public void ACopySharesTheHessianAndItsWhiteningUntilOneSideChangesOrConsumesIt()
    {
        const int columns = 6, tokens = 40;
        var random = new Random(41);
        var x = new float[tokens * columns];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(random.NextDouble() * 2 - 1);
        var source = new SiteStatistics(columns, StatisticsNeeds.Hessian, maxSampleTokens: 0);
        source.Add(x, tokens);
        var h = source.Hessian();
        var before = (double[])h.Clone();
        var whitening = source.Whitening(1e-6);
        Assert.Same(whitening, source.Whitening(1e-6));
        Assert.NotSame(whitening, source.Whitening(1e-3)); // another dampening is another factorization

        var shared = source.Whitening(1e-3);
        var copy = source.Copy();
        Assert.Same(h, copy.Hessian());
        Assert.Same(shared, copy.Whitening(1e-3));
        copy.DivideChannels([.. Enumerable.Repeat(2f, columns)]);
        Assert.Equal(before, h); // the original is untouched
        Assert.Same(shared, source.Whitening(1e-3));
        Assert.NotSame(h, copy.Hessian());
        for (int i = 0; i < h.Length; i++) Assert.Equal(before[i] / 4, copy.Hessian()[i]);
        Assert.NotSame(shared, copy.Whitening(1e-3)); // factored again for the divided inputs

        var taken = source.Copy().TakeHessian(); // a consumer may overwrite what it takes: never the shared array
        Assert.NotSame(h, taken);
        Assert.Equal(before, taken);
        Assert.Equal(before, source.TakeHessian());
    }
}
