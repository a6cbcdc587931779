using System.Runtime.InteropServices;
using System.Text.Json;
using LlmShrink.Export;
using LlmShrink.Formats;
using LlmShrink.Formats.Safetensors;
using LlmShrink.Model;
using LlmShrink.Representations;

namespace LlmShrink.Training;

/// <summary>
/// A trained model as a Hugging Face folder's weights: config.json and model.safetensors (float32, canonical names). A
/// fake-quantized weight (<see cref="Parameter.Quantization"/>) is re-packed into the GPTQ v1 tensors it was read from
/// (same bits, groups, g_idx and symmetry; <see cref="FakeQuantization.Pack"/>), and config.json gets the
/// <c>quantization_config</c> <c>llmshrink compress</c> writes for such a folder.
/// </summary>
public static class TrainedCheckpoint
{
    /// <summary>Writes config.json and model.safetensors into <paramref name="folder"/> (the caller makes the folder atomic and adds a tokenizer).</summary>
    public static void Write(TrainableModel model, string folder)
    {
        var c = model.Config;
        // Hugging Face folders pair dimensions as rotate-half; interleaved q/k rows would need permuting first.
        if (c.RopeStyle != RopeStyle.RotateHalf) throw new ShrinkException("writing a model with interleaved RoPE pairs as a Hugging Face folder is not supported");
        var quantized = new List<GptqSafetensorsExporter.GptqModule>();
        var entries = new List<SafetensorsWriter.Entry>();
        foreach (var p in model.Parameters)
        {
            if (p.Quantization is { } quantization)
            {
                string module = p.Name[..^".weight".Length];
                var matrix = quantization.Pack(p.Value);
                quantized.Add(GptqSafetensorsExporter.Describe(module, matrix));
                entries.AddRange(GptqRepresentation.Tensors(module, matrix));
            }
            else
                entries.Add(new SafetensorsWriter.Entry(p.Name, TensorType.F32, [.. p.Shape.Select(s => (long)s)], stream => stream.Write(MemoryMarshal.AsBytes(p.Value.AsSpan()))));
        }
        SafetensorsWriter.Write(Path.Combine(folder, "model.safetensors"), [.. entries.OrderBy(e => e.Name, StringComparer.Ordinal)], new Dictionary<string, string> { ["format"] = "pt" });
        var config = SafetensorsExporter.FromModelConfig(c);
        config["torch_dtype"] = "float32";
        if (quantized.Count > 0)
        {
            var dense = model.Blocks.SelectMany(b => new[] { b.Q, b.K, b.V, b.O, b.Gate, b.Up, b.Down })
                .Where(p => p.Quantization is null).Select(p => p.Name[..^".weight".Length]).ToList();
            config["quantization_config"] = GptqSafetensorsExporter.QuantizationConfig(quantized, dense, c.NumLayers);
        }
        File.WriteAllText(Path.Combine(folder, "config.json"), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }
}
