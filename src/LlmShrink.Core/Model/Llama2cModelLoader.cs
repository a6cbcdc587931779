using LlmShrink.Formats;
using LlmShrink.Formats.Llama2c;
using LlmShrink.Tokenization;

namespace LlmShrink.Model;

/// <summary>Opens a llama2.c checkpoint (header of 7 int32, then float32 weights) with its tokenizer.bin.</summary>
public static class Llama2cModelLoader
{
    public static LoadedModel Load(string path, string? tokenizerPath)
    {
        // Every .bin comes here, so PyTorch's pytorch_model.bin is recognized and refused before anything else.
        PickleCheckpoint.ThrowIfPickle(path);
        var (config, weights) = Llama2cCheckpoint.Open(path);
        try
        {
            HfModelLoader.CheckTensors(config, weights, path);
            return new LoadedModel
            {
                Source = path,
                Format = "llama2c",
                Config = config,
                Weights = weights,
                Tokenizer = LoadTokenizer(path, tokenizerPath, config.VocabSize),
            };
        }
        catch { weights.Dispose(); throw; }
    }

    /// <summary>The named tokenizer (which must exist), else tokenizer.bin beside the checkpoint if there is one.</summary>
    private static ITextTokenizer? LoadTokenizer(string checkpointPath, string? tokenizerPath, int vocabSize)
    {
        if (tokenizerPath is not null)
        {
            if (!File.Exists(tokenizerPath)) throw ShrinkException.InFile(tokenizerPath, "tokenizer file not found");
            return TokenizerFactory.FromLlama2cFile(tokenizerPath, vocabSize);
        }
        string beside = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(checkpointPath))!, "tokenizer.bin");
        return File.Exists(beside) ? TokenizerFactory.FromLlama2cFile(beside, vocabSize) : null;
    }
}
