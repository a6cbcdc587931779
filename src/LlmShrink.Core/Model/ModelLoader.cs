using LlmShrink.Hub;

namespace LlmShrink.Model;

/// <summary>
/// Opens whatever the user names as a model: a Hugging Face folder, a <c>.gguf</c> file, a llama2.c
/// <c>.bin</c> checkpoint, or a Hugging Face id <c>org/name[@revision]</c> resolved through the local cache.
/// </summary>
public static class ModelLoader
{
    /// <param name="cancellation">Stops a Hub download; its partial file stays in the cache to be resumed.</param>
    /// <param name="downloadProgress">Told how far each file of a Hub download is: (file, bytes done, total bytes or -1).</param>
    public static LoadedModel Load(string model, string? tokenizerPath = null, CancellationToken cancellation = default,
        IProgress<(string File, long Done, long Total)>? downloadProgress = null)
    {
        if (Directory.Exists(model)) return HfModelLoader.Load(model);
        if (File.Exists(model))
        {
            if (model.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase)) return GgufModelLoader.Load(model);
            if (model.EndsWith(".bin", StringComparison.OrdinalIgnoreCase)) return Llama2cModelLoader.Load(model, tokenizerPath);
            throw ShrinkException.InFile(model, "unrecognized model file (expected a .gguf file, a llama2.c .bin checkpoint, or a Hugging Face folder)");
        }
        if (IsHubId(model, out var id))
        {
            var resolver = new HubResolver(HubOptions.FromEnvironment() with { Progress = downloadProgress });
            return HfModelLoader.Load(resolver.ResolveAsync(id, cancellation).GetAwaiter().GetResult());
        }
        throw ShrinkException.InFile(model, "no such file or folder, and not a Hugging Face id of the form org/name[@revision]");
    }

    /// <summary>Whether <see cref="Load"/> would take <paramref name="model"/> as a Hugging Face id (no local file or folder has that name).</summary>
    public static bool IsHubId(string model, out HubId id)
    {
        id = default!;
        return !Directory.Exists(model) && !File.Exists(model) && HubId.TryParse(model, out id);
    }
}
