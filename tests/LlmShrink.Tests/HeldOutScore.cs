using LlmShrink.Evaluation;
using LlmShrink.Model;

namespace LlmShrink.Tests;

/// <summary>A compressed tinylit-8m scored against the original on the held-out text, as <c>llmshrink eval --reference</c> scores it.</summary>
internal static class HeldOutScore
{
    /// <summary>(perplexity, KL to the original) on the first <paramref name="chunks"/> chunks of 256 tokens (llama.cpp's protocol).</summary>
    public static (double Ppl, double Kl) Of(string model, int chunks = 60)
    {
        using var loaded = ModelLoader.Load(model);
        using var original = ModelLoader.Load(SharedData.TinyLit);
        using var transformer = new Transformer(loaded);
        using var reference = new Transformer(original);
        var tokenizer = original.RequireTokenizer();
        var tokens = tokenizer.Encode(File.ReadAllText(SharedData.Corpus("tinylit_eval.txt")), addBos: true);
        var r = Perplexity.Evaluate(tokens, 256, PerplexityProtocol.LlamaCpp, tokenizer.BosId,
            new TransformerLogitModel(transformer, 256), new TransformerLogitModel(reference, 256), chunks);
        return (r.Perplexity, r.MeanKlDivergence!.Value);
    }
}
