using LlmShrink.Model;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>The forward pass on the real checkpoints in ../shared.</summary>
public class ForwardRealModelTests
{
    [Fact]
    public void TinyLit_logits_match_scalar_reference()
    {
        using var model = HfModelLoader.Load(SharedData.TinyLit);
        var tokenizer = model.RequireTokenizer();
        var tokens = tokenizer.Encode("Pierre one day told her of Rousseau’s view, with which he quite agreed.", addBos: true)[..16];
        using var transformer = new Transformer(model);
        int vocab = model.Config.VocabSize;
        var actual = new float[tokens.Length * vocab];
        transformer.Forward(tokens, transformer.NewCache(tokens.Length), actual);

        var expected = ReferenceForward.Logits(model, tokens);
        double scale = expected.SelectMany(r => r).Max(Math.Abs), worst = 0;
        for (int t = 0; t < tokens.Length; t++)
            for (int i = 0; i < vocab; i++) worst = Math.Max(worst, Math.Abs(actual[t * vocab + i] - expected[t][i]));
        Assert.True(worst < 1e-5 * scale, $"max |Δ| = {worst} with logit scale {scale}");

        // A trained model: after "Pierre one day told her of Rousseau’s" most next tokens are likely under it.
        double logLikelihood = 0;
        for (int t = 0; t + 1 < tokens.Length; t++)
        {
            var row = expected[t];
            double max = row.Max(), logSum = max + Math.Log(row.Sum(v => Math.Exp(v - max)));
            logLikelihood += row[tokens[t + 1]] - logSum;
        }
        double perplexity = Math.Exp(-logLikelihood / (tokens.Length - 1));
        Assert.InRange(perplexity, 1, 400); // uniform over 4096 tokens would be 4096
    }
}
