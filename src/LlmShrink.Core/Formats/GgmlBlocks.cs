namespace LlmShrink.Formats;

/// <summary>Decoders for ggml's block-quantized types, exactly as ggml-quants.c defines them.</summary>
public static class GgmlBlocks
{
    public static void Dequantize(TensorType type, ReadOnlySpan<byte> src, Span<float> dst) =>
        throw new NotSupportedException($"{type} decoding not implemented yet");
}
