namespace LlmShrink.Model;

/// <summary>Opens a llama2.c checkpoint (header of 7 int32, then float32 weights) with its tokenizer.bin.</summary>
public static class Llama2cModelLoader
{
    public static LoadedModel Load(string path, string? tokenizerPath) => throw new NotImplementedException();
}
