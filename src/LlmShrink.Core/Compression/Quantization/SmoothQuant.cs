using System.Numerics.Tensors;

namespace LlmShrink.Compression.Quantization;

/// <summary>Symmetric int8 values with one scale per row: value ≈ Scales[row] · Values[row, col].</summary>
public sealed record Int8Rows(int Rows, int Columns, sbyte[] Values, float[] Scales);

/// <summary>
/// SmoothQuant (Xiao et al. 2023, "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large
/// Language Models", §4): activation outliers live in a few input channels, which per-token int8 cannot
/// represent well. Dividing channel j of X by s_j and multiplying column j of W by s_j leaves X Wᵀ
/// unchanged and migrates the difficulty into the weights:
///   s_j = max_t |X_tj|^α / max_o |W_oj|^(1−α)   (α = 0.5 by default; W over all layers sharing X).
/// Then weights are int8 per output channel and activations int8 per token (dynamic), both symmetric,
/// and the linear layer is an exact int8 GEMM rescaled by s_x[t] · s_w[o].
/// </summary>
public static class SmoothQuant
{
    /// <summary>max_t |X_tj| per input channel — calibration statistics gathered over all batches (take the max across batches).</summary>
    public static float[] ActivationAbsMax(ReadOnlySpan<float> x, int tokens, int columns)
    {
        var max = new float[columns];
        for (int t = 0; t < tokens; t++)
            TensorPrimitives.MaxMagnitude(max, x.Slice(t * columns, columns), max);
        TensorPrimitives.Abs(max, max);
        return max;
    }

    /// <summary>s_j for the layers (each W [rows, columns]) that read the same input; clamped as the reference does (≥ 1e-5).</summary>
    public static float[] SmoothingScales(ReadOnlySpan<float> activationAbsMax, IReadOnlyList<(float[] Weight, int Rows)> layers,
        int columns, double alpha = 0.5)
    {
        if (activationAbsMax.Length != columns) throw new ArgumentException("SmoothQuant: one activation maximum per column is needed");
        if (!(alpha >= 0 && alpha <= 1)) throw new ShrinkException($"SmoothQuant: α must be in [0, 1], not {alpha}");
        var weightMax = new float[columns];
        foreach (var (w, rows) in layers)
        {
            if (w.Length != (long)rows * columns) throw new ArgumentException("SmoothQuant: a weight does not have the given shape");
            for (int r = 0; r < rows; r++)
                TensorPrimitives.MaxMagnitude(weightMax, w.AsSpan(r * columns, columns), weightMax);
        }
        var s = new float[columns];
        for (int j = 0; j < columns; j++)
        {
            double a = Math.Max(activationAbsMax[j], 1e-5), wm = Math.Max(Math.Abs(weightMax[j]), 1e-5);
            s[j] = (float)Math.Max(Math.Pow(a, alpha) / Math.Pow(wm, 1 - alpha), 1e-5);
        }
        return s;
    }

    /// <summary>W ← W · diag(s): column j of every layer reading the smoothed input is multiplied by s_j.</summary>
    public static void ScaleWeightColumns(Span<float> w, int rows, int columns, ReadOnlySpan<float> s)
    {
        for (int r = 0; r < rows; r++)
            TensorPrimitives.Multiply(w.Slice(r * columns, columns), s, w.Slice(r * columns, columns));
    }

    /// <summary>X ← X · diag(s)⁻¹. In a model this is folded into the producer (the RMSNorm weight is divided by s).</summary>
    public static void DivideActivations(Span<float> x, int tokens, int columns, ReadOnlySpan<float> s)
    {
        for (int t = 0; t < tokens; t++)
            TensorPrimitives.Divide(x.Slice(t * columns, columns), s, x.Slice(t * columns, columns));
    }

    /// <summary>Symmetric int8 per row: scale = max|row| / 127, q = round(v / scale) ∈ [−127, 127].
    /// Used per output channel for weights and per token (dynamically, at run time) for activations.</summary>
    public static Int8Rows QuantizeRows(ReadOnlySpan<float> values, int rows, int columns)
    {
        if (values.Length != (long)rows * columns) throw new ArgumentException("int8: values do not match the shape");
        var q = new sbyte[values.Length];
        var scales = new float[rows];
        for (int r = 0; r < rows; r++)
        {
            var row = values.Slice(r * columns, columns);
            float max = MathF.Abs(TensorPrimitives.MaxMagnitude(row));
            float scale = max > 0 ? max / 127f : 1f;
            scales[r] = scale;
            for (int c = 0; c < columns; c++)
                q[r * columns + c] = (sbyte)Math.Clamp((int)MathF.Round(row[c] / scale, MidpointRounding.ToEven), -127, 127);
        }
        return new Int8Rows(rows, columns, q, scales);
    }
}
