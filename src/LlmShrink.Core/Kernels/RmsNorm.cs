using System.Numerics.Tensors;

namespace LlmShrink.Kernels;

/// <summary>
/// Root-mean-square layer norm (Zhang &amp; Sennrich 2019): y = x / sqrt(mean(x²) + ε) · w, without mean subtraction
/// or bias, as Llama applies it before attention, before the MLP, at the end, and (qwen3) to each head of q and k.
/// </summary>
public static class RmsNorm
{
    /// <summary>Normalizes one row; <paramref name="output"/> may be <paramref name="input"/>.</summary>
    public static void Apply(ReadOnlySpan<float> input, ReadOnlySpan<float> weight, Span<float> output, float eps)
    {
        int d = weight.Length;
        input = input[..d];
        float scale = 1f / MathF.Sqrt(TensorPrimitives.SumOfSquares(input) / d + eps);
        TensorPrimitives.Multiply(input, scale, output[..d]);
        TensorPrimitives.Multiply(output[..d], weight, output[..d]);
    }

    /// <summary>Normalizes each of the rows of length weight.Length in <paramref name="input"/>.</summary>
    public static void ApplyRows(ReadOnlySpan<float> input, ReadOnlySpan<float> weight, Span<float> output, int rows, float eps)
    {
        int d = weight.Length;
        for (int r = 0; r < rows; r++) Apply(input.Slice(r * d, d), weight, output.Slice(r * d, d), eps);
    }

    public static void Reference(ReadOnlySpan<float> input, ReadOnlySpan<float> weight, Span<float> output, float eps)
    {
        int d = weight.Length;
        double sumSquares = 0;
        for (int i = 0; i < d; i++) sumSquares += (double)input[i] * input[i];
        double scale = 1.0 / Math.Sqrt(sumSquares / d + eps);
        for (int i = 0; i < d; i++) output[i] = (float)(input[i] * scale * weight[i]);
    }
}
