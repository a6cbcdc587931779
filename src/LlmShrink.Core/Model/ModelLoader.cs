using LlmShrink.Hub;

namespace LlmShrink.Model;

/// <summary>
/// Opens whatever the user names as a model: a Hugging Face folder, a <c>.gguf</c> file, a llama2.c
/// <c>.bin</c> checkpoint, or a Hugging Face id <c>org/name[@revision]</c> resolved through the local cache.
/// </summary>
public static class ModelLoader
{
    public static LoadedModel Load(string model, string? tokenizerPath = null)
    {
        if (Directory.Exists(model)) return HfModelLoader.Load(model);
        if (File.Exists(model))
        {
            if (model.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase)) return GgufModelLoader.Load(model);
            if (model.EndsWith(".bin", StringComparison.OrdinalIgnoreCase)) return Llama2cModelLoader.Load(model, tokenizerPath);
            throw ShrinkException.InFile(model, "unrecognized model file (expected a .gguf file, a llama2.c .bin checkpoint, or a Hugging Face folder)");
        }
        if (HubId.TryParse(model, out var id)) return HfModelLoader.Load(HubResolver.FromEnvironment().Resolve(id));
        throw ShrinkException.InFile(model, "no such file or folder, and not a Hugging Face id of the form org/name[@revision]");
    }
}
