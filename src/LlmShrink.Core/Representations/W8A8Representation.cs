using System.Runtime.InteropServices;
using LlmShrink.Formats;
using LlmShrink.Formats.Safetensors;
using LlmShrink.Model;

namespace LlmShrink.Representations;

/// <summary>
/// W8A8 (SmoothQuant): an I8 <c>weight</c> [out, in] with an F32 <c>weight_scale</c> [out, 1], one scale per output
/// channel; activations are quantized per token at run time (<see cref="W8A8Linear"/>, weights read in place).
/// </summary>
public sealed class W8A8Representation : LayerRepresentation
{
    public static readonly W8A8Representation Instance = new();
    public override string Name => "w8a8";
    public override IReadOnlyList<string> Suffixes { get; } = [".weight", ".weight_scale"];

    public override bool Detect(TensorSet weights, string module) =>
        weights.Find(module + ".weight") is { Type: TensorType.I8 } && weights.Contains(module + ".weight_scale");

    public override (int Out, int In) Shape(TensorSet weights, string module)
    {
        var (weight, _) = Tensors(weights, module);
        return ((int)weight.Shape[0], (int)weight.Shape[1]);
    }

    public override int Bits(TensorSet weights, string module) => 8;

    public override Linear Load(TensorSet weights, string module, float[]? bias)
    {
        var (weight, scale) = Tensors(weights, module);
        return new W8A8Linear(weight, scale.ToFloatArray(), bias: bias);
    }

    public override ScaledIntegerMatrix Integers(TensorSet weights, string module)
    {
        var (weight, scale) = Tensors(weights, module);
        return ScaledIntegerMatrix.FromRows(MemoryMarshal.Cast<byte, sbyte>(weight.Bytes()).ToArray(), scale.ToFloatArray(),
            (int)weight.Shape[0], (int)weight.Shape[1]);
    }

    private static (StoredTensor Weight, StoredTensor Scale) Tensors(TensorSet weights, string module)
    {
        var weight = weights.Get(module + ".weight");
        var scale = weights.Get(module + ".weight_scale");
        if (weight.Shape.Length != 2 || weight.Shape[0] is <= 0 or > int.MaxValue || weight.Shape[1] is <= 0 or > int.MaxValue)
            throw ShrinkException.InFile(weight.File.Path, $"tensor '{weight.Name}' has shape [{string.Join(", ", weight.Shape)}], not a matrix");
        TensorShapes.Expect(scale, weight.Shape[0], 1);
        if (scale.Type != TensorType.F32) throw ShrinkException.InFile(scale.File.Path, $"tensor '{scale.Name}' is {scale.Type}, expected F32");
        return (weight, scale);
    }
}

/// <summary>SmoothQuant W8A8: int8 weights [out, in] with a float scale per output channel; activations are quantized per token at run time.</summary>
public sealed record W8A8Layer(int Layer, LinearRole Role, sbyte[] Weights, float[] Scales, int Rows, int Columns, float[]? Bias) : CompressedLayer(Layer, Role, Bias)
{
    public override LayerRepresentation Representation => W8A8Representation.Instance;
    public override int Rows { get; } = Rows;
    public override int Columns { get; } = Columns;
    public override Linear Build() => new W8A8Linear(Columns, Rows, Weights, Scales, bias: Bias);
    public override double StoredBits => (double)Rows * Columns * 8 + Rows * 32.0;
    /// <summary>The weights only: activations are quantized at run time, which no weight matrix expresses.</summary>
    public override float[] Dequantize() => ScaledIntegerMatrix.FromRows(Weights, Scales, Rows, Columns).Dequantize();
    protected override string Scheme => "int8 weights per channel, int8 activations per token";

    public override IEnumerable<SafetensorsWriter.Entry> Tensors(string module)
    {
        yield return Entries.Raw(module + ".weight", TensorType.I8, [Rows, Columns], MemoryMarshal.AsBytes(Weights.AsSpan()).ToArray());
        yield return Entries.Floats(module + ".weight_scale", Scales, [Rows, 1]);
    }
}
