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
/// <c>quantization_config</c> <c>llmshrink compress</c> writes for such a folder. A factored layer
/// (<see cref="Parameter.Factored"/>) is written as the low-rank module it was read from, <c>lowrank_u.weight</c> = U and
/// <c>lowrank_v.weight</c> = V in their stored type (<see cref="LowRankRepresentation"/>). A LoRA adapter
/// (<see cref="Parameter.Adapter"/>) is merged into its weight, W + s·B·A — masked where the weight is pruned, so the
/// merged layer keeps every zero (<see cref="LowRankAdapter.Masked"/>) — or, with <c>keepAdapters</c>, written beside
/// the unchanged weight as a compensation (<see cref="CompensatedRepresentation"/>: <c>lora_A.weight</c> = A,
/// <c>lora_B.weight</c> = s·B, so the module computes W·x + s·B·A·x with no scale of its own) in
/// <see cref="CompensatedRepresentation.FileName"/>: the folder loads, evaluates and exports as a PEFT or llama.cpp
/// adapter exactly as an EoRA-compensated one does.
/// </summary>
public static class TrainedCheckpoint
{
    /// <summary>Writes config.json and model.safetensors into <paramref name="folder"/> (the caller makes the folder atomic and adds a tokenizer).</summary>
    public static void Write(TrainableModel model, string folder, bool keepAdapters = false)
    {
        var c = model.Config;
        // Hugging Face folders pair dimensions as rotate-half; interleaved q/k rows would need permuting first.
        if (c.RopeStyle != RopeStyle.RotateHalf) throw new ShrinkException("writing a model with interleaved RoPE pairs as a Hugging Face folder is not supported");
        var quantized = new List<GptqSafetensorsExporter.GptqModule>();
        var entries = new List<SafetensorsWriter.Entry>();
        var compensation = new List<SafetensorsWriter.Entry>();
        foreach (var p in model.Parameters)
        {
            string module = p.Name[..^".weight".Length];
            if (p.Quantization is { } quantization)
            {
                var matrix = quantization.Pack(p.Value);
                quantized.Add(GptqSafetensorsExporter.Describe(module, matrix));
                entries.AddRange(GptqRepresentation.Tensors(module, matrix));
            }
            else if (p.Adapter is { } factors && !p.HasValue)
            {
                entries.Add(Entries.Encoded(module + LowRankRepresentation.U + ".weight", factors.StoredType, Scaled(factors), factors.Rows, factors.Rank));
                entries.Add(Entries.Encoded(module + LowRankRepresentation.V + ".weight", factors.StoredType, factors.A.Value, factors.Rank, factors.Columns));
            }
            else if (p.Adapter is { } adapter && keepAdapters)
            {
                if (p.Mask is not null) throw new ShrinkException($"{p.Name}: a pruned layer's adapter trains through its mask and is merged, not kept");
                entries.Add(Float32(p.Name, p.Value, p.Shape));
                compensation.Add(Entries.Encoded(module + CompensatedRepresentation.ASuffix, adapter.StoredType, adapter.A.Value, adapter.Rank, adapter.Columns));
                compensation.Add(Entries.Encoded(module + CompensatedRepresentation.BSuffix, adapter.StoredType, Scaled(adapter), adapter.Rows, adapter.Rank));
            }
            else if (p.Adapter is { } merged) // merged as the file is written, one module's product at a time
                entries.Add(new(p.Name, TensorType.F32, [.. p.Shape.Select(s => (long)s)], stream => stream.Write(MemoryMarshal.AsBytes(merged.Masked(p.Value, p.Mask).AsSpan()))));
            else
                entries.Add(Float32(p.Name, p.Value, p.Shape));
        }
        var metadata = new Dictionary<string, string> { ["format"] = "pt" };
        SafetensorsWriter.Write(Path.Combine(folder, "model.safetensors"), [.. entries.OrderBy(e => e.Name, StringComparer.Ordinal)], metadata);
        if (compensation.Count > 0)
            SafetensorsWriter.Write(Path.Combine(folder, CompensatedRepresentation.FileName), [.. compensation.OrderBy(e => e.Name, StringComparer.Ordinal)], metadata);
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

    private static SafetensorsWriter.Entry Float32(string name, float[] values, int[] shape) =>
        new(name, TensorType.F32, [.. shape.Select(s => (long)s)], stream => stream.Write(MemoryMarshal.AsBytes(values.AsSpan())));

    /// <summary>s·B: the factor a reader multiplies by with no scale of its own (1 for a factored layer: B itself).</summary>
    private static float[] Scaled(LowRankAdapter adapter) =>
        adapter.Scale == 1 ? adapter.B.Value : [.. adapter.B.Value.Select(v => v * adapter.Scale)];
}
