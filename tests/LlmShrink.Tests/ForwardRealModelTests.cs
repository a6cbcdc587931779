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
        var expected = AssertMatchesReference(model, tokens);

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

    [Fact]
    public void Stories260K_greedy_generation_matches_the_reference_implementations()
    {
        using var model = GgufModelLoader.Load(SharedData.Stories260K);
        var tokenizer = model.RequireTokenizer();
        using var transformer = new Transformer(model);
        var tokens = new List<int>(tokenizer.Encode("Once upon a time", addBos: true));
        var cache = transformer.NewCache(tokens.Count + 64);
        var logits = new float[model.Config.VocabSize];
        transformer.Forward(tokens.ToArray(), cache, logits);
        for (int i = 0; i < 64; i++)
        {
            int next = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits);
            tokens.Add(next);
            if (i < 63) transformer.Forward([next], cache, logits);
        }
        // ../shared/README.md: greedy output of the reference C implementations (BOS first, 64 new tokens).
        Assert.Equal("Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.\nLily's mom said",
            tokenizer.Decode(tokens.ToArray()));
    }

    [Fact]
    public void Stories260K_logits_match_scalar_reference()
    {
        using var model = GgufModelLoader.Load(SharedData.Stories260K);
        var tokens = model.RequireTokenizer().Encode("Once upon a time, there was a little girl", addBos: true);
        AssertMatchesReference(model, tokens);
    }

    /// <summary>Runs the transformer on <paramref name="tokens"/> and checks every logit against the scalar reference; returns the reference logits.</summary>
    private static double[][] AssertMatchesReference(LoadedModel model, int[] tokens)
    {
        using var transformer = new Transformer(model);
        int vocab = model.Config.VocabSize;
        var actual = new float[tokens.Length * vocab];
        transformer.Forward(tokens, transformer.NewCache(tokens.Length), actual);
        var expected = ReferenceForward.Logits(model, tokens);
        double scale = expected.SelectMany(r => r).Max(Math.Abs), worst = 0;
        for (int t = 0; t < tokens.Length; t++)
            for (int i = 0; i < vocab; i++) worst = Math.Max(worst, Math.Abs(actual[t * vocab + i] - expected[t][i]));
        Assert.True(worst < 1e-5 * scale, $"max |Δ| = {worst} with logit scale {scale}");
        return expected;
    }
}
