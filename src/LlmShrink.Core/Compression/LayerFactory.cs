using LlmShrink.Model;

namespace LlmShrink.Compression;

/// <summary>The runnable layer for a compression result.</summary>
public static class LayerFactory
{
    public static Linear Build(CompressedLayer layer) => layer switch
    {
        DenseLayer d => new DenseLinear(d.Weights, d.Rows, d.Columns, d.Bias),
        QuantizedLayer q => LinearLoader.Quantized(q.Matrix, q.Bias),
        W8A8Layer w => new W8A8Linear(w.Columns, w.Rows, w.Weights, w.Scales, bias: w.Bias),
        _ => throw new ArgumentOutOfRangeException(nameof(layer)),
    };
}
