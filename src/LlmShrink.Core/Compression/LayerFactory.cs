using LlmShrink.Model;

namespace LlmShrink.Compression;

/// <summary>The runnable layer for a compression result.</summary>
public static class LayerFactory
{
    public static Linear Build(CompressedLayer layer) => layer switch
    {
        DenseLayer d => new DenseLinear(d.Weights, d.Rows, d.Columns, d.Bias),
        // Until the packed kernels land, quantized layers run as their exact dequantized values.
        QuantizedLayer q => new DenseLinear(q.Matrix.Dequantize(), q.Matrix.Rows, q.Matrix.Columns, q.Bias),
        _ => throw new NotSupportedException($"{layer.GetType().Name} has no runnable layer yet"),
    };
}
