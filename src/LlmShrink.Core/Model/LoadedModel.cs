using LlmShrink.Formats;
using LlmShrink.Tokenization;

namespace LlmShrink.Model;

/// <summary>A checkpoint opened for use: its configuration, its memory-mapped tensors under canonical names, its tokenizer.</summary>
public sealed class LoadedModel : IDisposable
{
    public required string Source { get; init; }
    /// <summary>"gguf", "safetensors", "llama2c".</summary>
    public required string Format { get; init; }
    public required ModelConfig Config { get; init; }
    public required TensorSet Weights { get; init; }
    /// <summary>Null only when the checkpoint carries no tokenizer; commands that need one fail with a clear error.</summary>
    public ITextTokenizer? Tokenizer { get; init; }

    /// <summary>Bytes of the model's files on disk.</summary>
    public long BytesOnDisk => Weights.Files.Sum(f => f.Length);

    public ITextTokenizer RequireTokenizer() =>
        Tokenizer ?? throw ShrinkException.InFile(Source, "no tokenizer found (expected tokenizer.model, tokenizer.json, or a vocabulary inside the GGUF file)");

    public void Dispose() => Weights.Dispose();
}
