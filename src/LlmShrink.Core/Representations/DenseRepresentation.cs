using System.Runtime.InteropServices;
using LlmShrink.Formats;
using LlmShrink.Formats.Safetensors;
using LlmShrink.Model;

namespace LlmShrink.Representations;

/// <summary>A plain <c>.weight</c> [out, in] of any stored type (F32/F16/BF16, or a ggml block type from a GGUF file).</summary>
public sealed class DenseRepresentation : LayerRepresentation
{
    public static readonly DenseRepresentation Instance = new();
    public override string Name => "dense";
    public override IReadOnlyList<string> Suffixes { get; } = [".weight"];
    public override bool IsDense => true;

    public override bool Detect(TensorSet weights, string module) => weights.Contains(module + ".weight");

    public override (int Out, int In) Shape(TensorSet weights, string module)
    {
        var w = weights.Get(module + ".weight");
        if (w.Shape.Length != 2 || w.Shape[0] is <= 0 or > int.MaxValue || w.Shape[1] is <= 0 or > int.MaxValue)
            throw ShrinkException.InFile(w.File.Path, $"tensor '{w.Name}' has shape [{string.Join(", ", w.Shape)}], not a matrix");
        return ((int)w.Shape[0], (int)w.Shape[1]);
    }

    public override int Bits(TensorSet weights, string module)
    {
        var w = weights.Get(module + ".weight");
        return (int)(w.ByteLength * 8 / Math.Max(1, w.ElementCount));
    }

    /// <summary>The weight tensor has the implied shape (the error names the tensor and its file, as for any other tensor).</summary>
    public override void Check(TensorSet weights, string module, int outFeatures, int inFeatures, string source) =>
        TensorShapes.Expect(weights.Get(module + ".weight"), outFeatures, inFeatures);

    public override Linear Load(TensorSet weights, string module, float[]? bias)
    {
        var (o, i) = Shape(weights, module);
        return Linear.FromStored(weights.Get(module + ".weight"), bias, o, i);
    }
}

/// <summary>
/// Float weights [out, in] that differ from the checkpoint: rescaled by a fold (AWQ, SmoothQuant) or pruned and updated
/// (magnitude, Wanda, SparseGPT). Stored as <see cref="StoredType"/> — F32 for rescaled layers, the source's float type
/// for pruned ones (a pruned layer is no reason to double a BF16 checkpoint's bytes) — and run exactly as stored.
/// </summary>
public sealed record DenseLayer(int Layer, LinearRole Role, float[] Weights, int Rows, int Columns, float[]? Bias) : CompressedLayer(Layer, Role, Bias)
{
    public TensorType StoredType { get; init; } = TensorType.F32;

    public override LayerRepresentation Representation => DenseRepresentation.Instance;
    public override int Rows { get; } = Rows;
    public override int Columns { get; } = Columns;

    public override Linear Build() => StoredType is TensorType.F16 or TensorType.BF16
        ? HalfWidthLayers.Encode(StoredType, Weights, Rows, Columns, Bias)
        : new DenseLinear(TensorEncoding.Round(StoredType, Weights), Rows, Columns, Bias);

    public override double StoredBits => (double)Rows * Columns * 8 * TensorTypes.ByteCount(StoredType, 1);

    public override float[] Dequantize() => TensorEncoding.Round(StoredType, Weights);

    protected override string Scheme => StoredType == TensorType.F32 ? "dense" : $"dense {StoredType}";

    public override IEnumerable<SafetensorsWriter.Entry> Tensors(string module)
    {
        yield return Entries.Encoded(module + ".weight", StoredType, Weights, Rows, Columns);
    }
}
