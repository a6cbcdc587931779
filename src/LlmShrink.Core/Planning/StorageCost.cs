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
