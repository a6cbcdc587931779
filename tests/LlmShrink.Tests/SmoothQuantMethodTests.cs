using LlmShrink.Compression;
using LlmShrink.Compression.Recipes;
using LlmShrink.Model;
using Xunit;

namespace LlmShrink.Tests;

public class SmoothQuantMethodTests
{
    [Fact]
    public void TinyLitW8A8StaysWithinOnePercentOfFloatAndReloadsIdentically()
    {
        using var dir = new TempDir();
        using var smoothed = TinyLitCompression.Run(Recipe.Load("w8a8-smoothquant"), dir.File("w8a8"));

        Assert.Equal(7 * 8, smoothed.Result.Layers.Count);
        Assert.All(smoothed.Transformer.Blocks, b => Assert.IsType<W8A8Linear>(b.Down));
        double perplexity = TinyLitCompression.Perplexity(smoothed.Transformer);
        double reference = TinyLitCompression.FloatPerplexity.Value;
        Assert.True(Math.Abs(perplexity / reference - 1) < 0.01, $"W8A8 {perplexity} vs F32 {reference}");
        TinyLitCompression.AssertReloadsIdentically(smoothed.Transformer, dir.File("w8a8"));
    }
}
