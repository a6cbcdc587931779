namespace LlmShrink.Compression.Quantization;

/// <summary>
/// One uniform quantization grid: w ≈ Scale · (code − Zero), code ∈ [0, MaxCode].
///
/// Fitting follows GPTQ's reference quantizer (IST-DASLab/gptq quant.py, find_params), written anew:
/// the range [min, max] is widened to contain 0 (so zero is exactly representable), then
/// asymmetric: scale = (max − min) / (2^b − 1), zero = round(−min / scale) clamped to [0, 2^b − 1];
/// symmetric:  the range is [−m, m] with m = max|w|, scale = 2m / (2^b − 1), zero = 2^(b−1)
///             (codes stay unsigned, as GPTQ checkpoints store them).
/// One deliberate difference: the reference keeps min = 0 for a symmetric group with no negative weight,
/// which halves the usable positive range; here symmetric always means [−m, m].
/// An all-zero group gets the range [−1, 1] as in the reference, so the scale is never 0.
///
/// The scale is rounded to float16 when fitted, because checkpoints store scales as F16: codes are
/// then chosen against the scale a reader will actually use, and pack/unpack round-trips exactly.
/// </summary>
public readonly record struct QuantGrid(float Scale, int Zero, int MaxCode)
{
    public static QuantGrid Fit(float min, float max, int bits, bool symmetric)
    {
        int maxCode = (1 << bits) - 1;
        min = MathF.Min(min, 0f);
        max = MathF.Max(max, 0f);
        if (symmetric)
        {
            max = MathF.Max(-min, max);
            min = -max;
        }
        if (min == 0f && max == 0f)
        {
            min = -1f;
            max = 1f;
        }
        float scale = ToStoredScale((max - min) / maxCode);
        int zero = symmetric
            ? (maxCode + 1) / 2
            : Math.Clamp((int)MathF.Round(-min / scale, MidpointRounding.ToEven), 0, maxCode);
        return new QuantGrid(scale, zero, maxCode);
    }

    /// <summary>Fits a grid to the range of <paramref name="values"/>.</summary>
    public static QuantGrid Fit(ReadOnlySpan<float> values, int bits, bool symmetric)
    {
        float min = 0f, max = 0f;
        if (!values.IsEmpty)
        {
            min = System.Numerics.Tensors.TensorPrimitives.Min(values);
            max = System.Numerics.Tensors.TensorPrimitives.Max(values);
        }
        return Fit(min, max, bits, symmetric);
    }

    /// <summary>Nearest code (round half to even, like torch.round), clamped to the grid.</summary>
    public int Code(float w) => Math.Clamp((int)MathF.Round(w / Scale, MidpointRounding.ToEven) + Zero, 0, MaxCode);

    /// <summary>The weight a code stands for.</summary>
    public float Value(int code) => Scale * (code - Zero);

    /// <summary>Round-to-nearest on this grid: Value(Code(w)).</summary>
    public float Quantize(float w) => Value(Code(w));

    /// <summary>Rounds a scale to the nearest float16, kept inside (0, 65504] so it stays usable.</summary>
    public static float ToStoredScale(float scale)
    {
        float stored = (float)(Half)scale;
        if (!(stored > 0f)) return (float)Half.Epsilon;
        return float.IsInfinity(stored) ? (float)Half.MaxValue : stored;
    }
}
