using LlmShrink.Formats.Safetensors;
using LlmShrink.Model;

namespace LlmShrink.Representations;

/// <summary>
/// What became of one linear layer [Rows, Columns] once the methods targeting it are done — the write side of a
/// representation: it builds the runtime layer, counts its stored bits, describes itself for the report and gives the
/// checkpoint tensors that its <see cref="Representation"/> reads back.
/// </summary>
public abstract record CompressedLayer(int Layer, LinearRole Role, float[]? Bias)
{
    public string ModulePath => LinearRoles.ModulePath(Layer, Role);
    /// <summary>Per input column mean x² of the calibration inputs the method saw (after any folding), when recorded.</summary>
    public float[]? InputImportance { get; init; }
    /// <summary>The pruning pattern the weights follow, for the report (e.g. "50.0 % unstructured", "2:4"), or null.</summary>
    public string? Sparsity { get; init; }

    public abstract LayerRepresentation Representation { get; }
    public abstract int Rows { get; }
    public abstract int Columns { get; }

    /// <summary>The layer that runs it (the same layer a loader builds from the written tensors).</summary>
    public abstract Linear Build();

    /// <summary>Bits stored for the weight: codes, scales, zero points, positions — not the bias.</summary>
    public abstract double StoredBits { get; }

    /// <summary>
    /// The weight [Rows, Columns], row-major, as the layer computes with it: what its stored tensors decode to (scale ·
    /// level, decoded blocks, the factors' product). A compensation of the compression error (EoRA) starts from it.
    /// It may be the layer's own array (a float32 dense layer): read it, do not modify it.
    /// </summary>
    public abstract float[] Dequantize();

    /// <summary>The report's "scheme" column.</summary>
    public string Describe() => Sparsity is null ? Scheme : $"{Scheme}, {Sparsity}";

    protected abstract string Scheme { get; }

    /// <summary>The weight's tensors under <paramref name="module"/> (e.g. qweight/qzeros/scales/g_idx).</summary>
    public abstract IEnumerable<SafetensorsWriter.Entry> Tensors(string module);
}
