namespace LlmShrink.Model;

/// <summary>Opens a GGUF file as a model: config from its metadata, tensors renamed to canonical names, embedded tokenizer.</summary>
public static class GgufModelLoader
{
    public static LoadedModel Load(string path) => throw new NotImplementedException();
}
