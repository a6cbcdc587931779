using LlmShrink.Compression;
using LlmShrink.Compression.Recipes;
using LlmShrink.Model;
using Xunit;
using LlmShrink.Representations;

namespace LlmShrink.Tests;

/// <summary>Scaling a site's input channels and folding the inverse into its producer must not change the model.</summary>
public class AwqMethodFoldingTests
{
    private static readonly int[] Tokens = [1, 5, 9, 33, 2, 60, 17, 17, 4, 41, 12, 66];

    private static float[] Logits(Transformer transformer)
    {
        var logits = new float[Tokens.Length * transformer.Config.VocabSize];
        transformer.Forward(Tokens, transformer.NewCache(Tokens.Length), logits);
        return logits;
    }

    [Theory]
    [InlineData(6, true)]  // multi-head attention with q/k/v biases: all four sites fold, v→o divides v's bias too
    [InlineData(2, false)] // grouped-query attention: v→o cannot fold
    public void ScalingEveryFoldableInputKeepsTheLogits(int kvHeads, bool bias)
    {
        using var dir = new TempDir();
        var config = SyntheticModel.Config() with { NumKvHeads = kvHeads, AttentionBias = bias };
        using var model = SyntheticModel.Build(dir.File("model.bin"), config, seed: 3);
        using var transformer = new Transformer(model, threads: 1);
        var expected = Logits(transformer);

        var random = new Random(7);
        for (int layer = 0; layer < config.NumLayers; layer++)
        {
            var block = transformer.Blocks[layer];
            var attnNorm = (float[])block.AttnNorm.Clone();
            var context = new BlockCompression(layer, config, block, model.Weights, new Dictionary<InputSite, SiteStatistics>());
            foreach (var site in BlockCompression.FoldOrder.Where(s => s != InputSite.LmHeadInput))
            {
                Assert.Equal(site != InputSite.AttentionOutput || kvHeads == config.NumHeads, context.CanScaleInput(site));
                if (!context.CanScaleInput(site)) continue;
                int columns = LinearRoles.Get(block, BlockCompression.Readers(site)[0]).InFeatures;
                // log-uniform in [1/4, 4]: large enough that a missed or misplaced fold shows in the logits
                var s = Enumerable.Range(0, columns).Select(_ => MathF.Pow(4, 2 * random.NextSingle() - 1)).ToArray();
                context.ScaleInputChannels(site, s);
            }
            var (layers, _) = context.Finish();
            // Every layer was rescaled (o only when its input could be) and became a dense layer.
            Assert.Equal(kvHeads == config.NumHeads ? 7 : 6, layers.Count);
            Assert.All(layers, l => Assert.IsType<DenseLayer>(l));
            Assert.NotEqual(attnNorm, block.AttnNorm);
        }
        // The head stage: a scale on lm_head's input folds into the final norm.
        var head = new BlockCompression(config.NumLayers, config, null, model.Weights, new Dictionary<InputSite, SiteStatistics>(), transformer);
        var finalNorm = (float[])transformer.FinalNorm.Clone();
        head.ScaleInputChannels(InputSite.LmHeadInput, Enumerable.Range(0, config.HiddenSize).Select(_ => MathF.Pow(4, 2 * random.NextSingle() - 1)).ToArray());
        Assert.IsType<DenseLayer>(Assert.Single(head.Finish().Layers));
        Assert.NotEqual(finalNorm, transformer.FinalNorm);

        var actual = Logits(transformer);
        for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], actual[i], 1e-4);
    }

    [Fact]
    public void DividedStatisticsEqualTheStatisticsOfTheDividedInputs()
    {
        const int columns = 40, tokens = 300;
        var random = new Random(11);
        var x = new float[tokens * columns];
        for (int i = 0; i < x.Length; i++) x[i] = (2 * random.NextSingle() - 1) * (i % columns == 3 ? 30 : 1);
        var s = Enumerable.Range(0, columns).Select(_ => 0.2f + 3 * random.NextSingle()).ToArray();
        var xs = (float[])x.Clone();
        for (int t = 0; t < tokens; t++)
            for (int j = 0; j < columns; j++) xs[t * columns + j] /= s[j];

        var needs = StatisticsNeeds.Hessian | StatisticsNeeds.ChannelMagnitudes | StatisticsNeeds.Samples;
        var divided = new SiteStatistics(columns, needs, maxSampleTokens: 250);
        var direct = new SiteStatistics(columns, needs, maxSampleTokens: 250);
        for (int start = 0; start < tokens; start += 100)
        {
            divided.Add(x.AsSpan(start * columns, 100 * columns), 100);
            direct.Add(xs.AsSpan(start * columns, 100 * columns), 100);
        }
        divided.DivideChannels(s);

        Assert.Equal(250, divided.SampleTokens);
        Assert.Equal(direct.Samples(), divided.Samples()); // the same float divisions: exact
        Assert.Equal(direct.AbsMax, divided.AbsMax);        // division is monotonic: the max divides exactly
        var meanDirect = direct.AbsMean();
        var meanDivided = divided.AbsMean();
        for (int j = 0; j < columns; j++) Assert.Equal(meanDirect[j], meanDivided[j], meanDirect[j] * 1e-5);
        var hDirect = direct.Hessian();
        var hDivided = divided.Hessian();
        double scale = hDirect.Max(Math.Abs);
        for (int i = 0; i < hDirect.Length; i++) Assert.Equal(hDirect[i], hDivided[i], scale * 1e-5);
        Assert.Throws<ArgumentException>(() => divided.DivideChannels(s.AsSpan(1)));
    }

    [Fact]
    public void AwqOnAMultiHeadModelStaysCloseToTheFloatModel()
    {
        using var dir = new TempDir();
        var config = SyntheticModel.Config() with { NumKvHeads = 6, AttentionBias = true };
        using var model = SyntheticModel.Build(dir.File("model.bin"), config, seed: 4);
        using var reference = new Transformer(model, threads: 1);
        using var transformer = new Transformer(model, threads: 1);
        var recipe = Recipe.Parse("""
            modifiers:
              - method: awq
                bits: 8
                granularity: channel
            """, "awq8", "test");
        var result = new SequentialPipeline(model, transformer, recipe).Run(Calibration(config.VocabSize));

        Assert.Equal(7 * config.NumLayers, result.Layers.Count);
        Assert.All(result.Layers, l => Assert.True(l.RelativeOutputError < 1e-3, $"{l.Module}: {l.RelativeOutputError}"));
        var expected = Logits(reference);
        var actual = Logits(transformer);
        double err = 0, norm = 0;
        for (int i = 0; i < expected.Length; i++) { err += Math.Pow(expected[i] - actual[i], 2); norm += Math.Pow(expected[i], 2); }
        // 8.5e-5 as written; 2.1e-4 when v's bias is left undivided by the v→o fold
        Assert.True(err / norm < 1.3e-4, $"relative logit error {err / norm}");
    }

    [Fact]
    public void FoldingIntoALayerAnEarlierModifierCompressedIsARecipeConflict()
    {
        using var dir = new TempDir();
        var config = SyntheticModel.Config();
        using var model = SyntheticModel.Build(dir.File("model.bin"), config, seed: 5);
        using var transformer = new Transformer(model, threads: 1);
        var recipe = Recipe.Parse("""
            modifiers:
              - method: rtn
                targets: [up_proj]
                granularity: channel
              - method: awq
                targets: [down_proj]
                granularity: channel
            """, "conflict", "test");
        var e = Assert.Throws<ShrinkException>(() => new SequentialPipeline(model, transformer, recipe).Run(Calibration(config.VocabSize)));
        Assert.Contains("recipe conflict", e.Message);
        Assert.Contains("model.layers.0.mlp.up_proj", e.Message);
    }

    private static CalibrationSet Calibration(int vocab)
    {
        var random = new Random(9);
        return new CalibrationSet(Enumerable.Range(0, 4).Select(_ => Enumerable.Range(0, 32).Select(_ => random.Next(vocab)).ToArray()).ToArray());
    }
}
