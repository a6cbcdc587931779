using LlmShrink.Formats;
using LlmShrink.Formats.Gguf;
using LlmShrink.Model;

namespace LlmShrink.Export;

/// <summary>
/// Writes a compressed model's compensation (<see cref="CompensationAdapter"/>) as a llama.cpp LoRA adapter, the GGUF that
/// <c>llama-cli/llama-perplexity --lora FILE</c> applies on top of the model's <c>--format gguf</c> export (which holds the
/// bases only). As llama.cpp's llama_adapter_lora_init reads it: <c>general.type</c> = "adapter", <c>adapter.type</c> =
/// "lora", <c>general.architecture</c> = the model's, <c>adapter.lora.alpha</c> (float32) = r, so its scale alpha/r is 1;
/// per module, <c>&lt;GGUF weight name&gt;.lora_a</c> A [r, in] (ggml ne = [in, r]) and <c>.lora_b</c> B [out, r]
/// (ne = [r, out]), llama.cpp computing w·x + scale·B·(A·x). For the llama architecture the rows of B of attn_q/attn_k
/// are permuted as the model export permutes those weights' rows (<see cref="RopeRowOrder"/>): B·A must land on the
/// rows it corrects. See docs/FORMAT.md, "Export: llama.cpp LoRA GGUF".
/// </summary>
public static class GgufLoraExporter
{
    /// <summary>Types the factors may be written as (<c>--type</c>); by default each factor keeps its stored type.</summary>
    public static readonly TensorType[] Types = [TensorType.F32, TensorType.F16, TensorType.BF16];

    /// <param name="cancellation">Stops the write within a batch of rows; no file is left behind.</param>
    public static void Export(LoadedModel model, string outputPath, TensorType? type = null, CancellationToken cancellation = default)
    {
        if (type is { } t && !Types.Contains(t))
            throw new ShrinkException($"--type {t}: a LoRA adapter's factors are written as {string.Join(", ", Types)}");
        var (modules, rank) = CompensationAdapter.Read(model);
        var c = model.Config;
        string arch = GgufExporter.Architecture(model);
        var names = GgufExporter.TensorMap(c, model.Weights).ToDictionary(m => m.Canonical, m => m.Gguf, StringComparer.Ordinal);

        var writer = new GgufWriter();
        writer.AddString("general.architecture", arch);
        writer.AddString("general.type", "adapter");
        writer.AddString("general.name", Path.GetFileName(Path.GetFullPath(model.Source).TrimEnd(Path.DirectorySeparatorChar)) + " compensation");
        writer.AddString("adapter.type", "lora");
        writer.AddFloat32("adapter.lora.alpha", rank);
        foreach (var module in modules)
        {
            string canonical = module.Path + ".weight";
            string ggufName = names.TryGetValue(canonical, out var n) ? n
                : throw ShrinkException.InFile(model.Source, $"module '{module.Path}' has no GGUF tensor to adapt (lm_head tied to the embeddings?)");
            var rows = GgufExporter.RowOrder(c, arch, canonical);
            var (a, b) = (module.A, module.B);
            var aType = type ?? a.Type;
            var bType = type ?? b.Type;
            writer.AddTensor(ggufName + ".lora_a", a.Shape, aType, stream => TensorRowWriter.Write(stream, a, aType));
            writer.AddTensor(ggufName + ".lora_b", b.Shape, bType, stream => TensorRowWriter.Write(stream, b, bType, rows));
        }
        writer.Write(outputPath, model.Weights.Files.Select(f => f.Path), cancellation);
    }
}
