using LlmShrink.Evaluation;
using LlmShrink.Model;

namespace LlmShrink.Tests;

/// <summary>Perplexity of a loaded model on a shared corpus, as <c>llmshrink eval</c> computes it.</summary>
public static class ModelPerplexity
{
    public static double Of(LoadedModel model, string corpus, int context, PerplexityProtocol protocol, int maxWindows = int.MaxValue)
    {
        using var transformer = new Transformer(model);
        return Of(transformer, model.RequireTokenizer(), corpus, context, protocol, maxWindows);
    }

    public static double Of(Transformer transformer, LlmShrink.Tokenization.ITextTokenizer tokenizer, string corpus, int context,
        PerplexityProtocol protocol, int maxWindows = int.MaxValue)
    {
        var tokens = tokenizer.Encode(File.ReadAllText(SharedData.Corpus(corpus)), tokenizer.AddBos);
        int? bos = protocol == PerplexityProtocol.LlamaCpp && tokenizer.AddBos ? tokenizer.BosId : null;
        return Perplexity.Evaluate(tokens, context, protocol, bos, new TransformerLogitModel(transformer, context), maxWindows: maxWindows).Perplexity;
    }
}
