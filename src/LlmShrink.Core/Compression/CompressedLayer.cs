using LlmShrink.Compression.Quantization;
using LlmShrink.Model;

namespace LlmShrink.Compression;

/// <summary>What became of one linear layer: kept dense (possibly rescaled), group-quantized, or W8A8.</summary>
public abstract record CompressedLayer(int Layer, LinearRole Role, float[]? Bias)
{
    public string ModulePath => LinearRoles.ModulePath(Layer, Role);
    /// <summary>Per input column mean x² of the calibration inputs the method saw (after any folding), when recorded.</summary>
    public float[]? InputImportance { get; init; }
}

/// <summary>A dense float32 weight [out, in] that differs from the checkpoint (e.g. AWQ folded a scale into it).</summary>
public sealed record DenseLayer(int Layer, LinearRole Role, float[] Weights, int Rows, int Columns, float[]? Bias) : CompressedLayer(Layer, Role, Bias);

/// <summary>A weight-only group-quantized layer (RTN, GPTQ, AWQ), stored in the GPTQ layout.</summary>
public sealed record QuantizedLayer(int Layer, LinearRole Role, QuantizedMatrix Matrix, float[]? Bias) : CompressedLayer(Layer, Role, Bias);

/// <summary>SmoothQuant W8A8: int8 weights [out, in] with a float scale per output channel; activations are quantized per token at run time.</summary>
public sealed record W8A8Layer(int Layer, LinearRole Role, sbyte[] Weights, float[] Scales, int Rows, int Columns, float[]? Bias) : CompressedLayer(Layer, Role, Bias);
