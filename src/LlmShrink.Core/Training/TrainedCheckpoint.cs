using System.Runtime.InteropServices;
using System.Text.Json;
using LlmShrink.Export;
using LlmShrink.Formats;
using LlmShrink.Formats.Safetensors;
using LlmShrink.Model;

namespace LlmShrink.Training;

/// <summary>A trained model as a Hugging Face folder's weights: config.json and model.safetensors (float32, canonical names).</summary>
public static class TrainedCheckpoint
{
    /// <summary>Writes config.json and model.safetensors into <paramref name="folder"/> (the caller makes the folder atomic and adds a tokenizer).</summary>
    public static void Write(TrainableModel model, string folder)
    {
        var c = model.Config;
        // Hugging Face folders pair dimensions as rotate-half; interleaved q/k rows would need permuting first.
        if (c.RopeStyle != RopeStyle.RotateHalf) throw new ShrinkException("writing a model with interleaved RoPE pairs as a Hugging Face folder is not supported");
        var entries = model.Parameters
            .OrderBy(p => p.Name, StringComparer.Ordinal)
            .Select(p => new SafetensorsWriter.Entry(p.Name, TensorType.F32, [.. p.Shape.Select(s => (long)s)],
                stream => stream.Write(MemoryMarshal.AsBytes(p.Value.AsSpan()))))
            .ToList();
        SafetensorsWriter.Write(Path.Combine(folder, "model.safetensors"), entries, new Dictionary<string, string> { ["format"] = "pt" });
        var config = SafetensorsExporter.FromModelConfig(c);
        config["torch_dtype"] = "float32";
        File.WriteAllText(Path.Combine(folder, "config.json"), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }
}
