using LlmShrink.Formats;
using LlmShrink.Formats.Safetensors;
using LlmShrink.Model;
using LlmShrink.Representations;

namespace LlmShrink.Planning;

/// <summary>
/// What a layer costs in the file the plan is written to, computed by that file's own writer code rather than from a
/// bits-per-weight formula: every tensor the representation writes (codes, scales, zero points, g_idx, positions) and
/// its header entry.
/// </summary>
public interface IStorageCost
{
    /// <summary>Bytes of <paramref name="layer"/> as written.</summary>
    long Bytes(CompressedLayer layer);

    /// <summary>Bytes of the layer left as stored in the source checkpoint.</summary>
    long KeptBytes(TensorSet weights, int layer, LinearRole role);
}

/// <summary>A Hugging Face folder as <see cref="Export.CompressedCheckpointWriter"/> writes it: safetensors data and header entries.</summary>
public sealed class FolderStorageCost : IStorageCost
{
    public static readonly FolderStorageCost Instance = new();

    public long Bytes(CompressedLayer layer) => SafetensorsWriter.StoredBytes([.. layer.Tensors(layer.ModulePath)]);

    public long KeptBytes(TensorSet weights, int layer, LinearRole role)
    {
        var t = weights.Get(role == LinearRole.LmHead ? TensorNames.LmHead : TensorNames.Layer(layer, LinearRoles.WeightSuffix(role)));
        return SafetensorsWriter.StoredBytes([new SafetensorsWriter.Entry(LinearRoles.ModulePath(layer, role) + ".weight", t.Type, t.Shape, _ => { })]);
    }
}

/// <summary>
/// A GGUF file as <see cref="Export.GgufExporter"/> writes it: a layer stored in a ggml block type is copied block for
/// block, so it costs its blocks, its tensor-info entry (name, dimensions, type, offset) and the padding that aligns
/// the next tensor's data to 32 bytes. Only block-typed layers have an exact GGUF price; anything else the export would
/// re-quantize, so it is refused.
/// </summary>
public sealed class GgufStorageCost : IStorageCost
{
    private const int Alignment = 32;

    /// <summary>Canonical weight name → the GGUF name the exporter gives it (its own map).</summary>
    private readonly Dictionary<string, string> _names;

    public GgufStorageCost(ModelConfig config, TensorSet weights) =>
        _names = Export.GgufExporter.TensorMap(config, weights).ToDictionary(m => m.Canonical, m => m.Gguf);

    public long Bytes(CompressedLayer layer)
    {
        if (layer is not GgmlTypeLayer ggml)
            throw new ShrinkException($"--format gguf: {layer.ModulePath} would be stored as {layer.Describe()}, which the GGUF export re-quantizes; " +
                "give --format gguf candidates of method 'ggml' (a llama.cpp block type per layer)");
        string canonical = layer.Role == LinearRole.LmHead ? TensorNames.LmHead : TensorNames.Layer(layer.Layer, LinearRoles.WeightSuffix(layer.Role));
        long data = ggml.Blocks.LongLength;
        return InfoBytes(_names[canonical], 2) + (data + Alignment - 1) / Alignment * Alignment;
    }

    public long KeptBytes(TensorSet weights, int layer, LinearRole role) =>
        throw new ShrinkException("--format gguf: 'keep' has no GGUF price (the export gives unplanned matrices one type); leave it out of the menu");

    /// <summary>name (u64 length + bytes), n_dims (u32), dims (u64 each), type (u32), data offset (u64) — GGUF v3's tensor info.</summary>
    private static long InfoBytes(string name, int dimensions) => 8 + System.Text.Encoding.UTF8.GetByteCount(name) + 4 + 8L * dimensions + 4 + 8;
}
