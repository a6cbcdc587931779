namespace LlmShrink.Model;

/// <summary>Opens a Hugging Face folder: config.json, (sharded) safetensors, tokenizer files.</summary>
public static class HfModelLoader
{
    public static LoadedModel Load(string folder) => throw new NotImplementedException();
}
