using System.Numerics.Tensors;

namespace LlmShrink.Training;

/// <summary>
/// RMSNorm (Zhang &amp; Sennrich 2019) over rows of length d: y_j = x_j · r · w_j with r = (Σ_j x_j² / d + ε)^(−½).
/// The forward keeps r per row. With ∂r/∂x_j = −r³ x_j / d the backward is
/// dx_j = r · (dy_j w_j − x_j · r² · (Σ_i dy_i w_i x_i) / d) and dw_j = Σ_rows dy_j x_j r.
/// </summary>
public static class RmsNormOp
{
    /// <summary>y = RMSNorm(x)·w row by row, r per row into <paramref name="rstd"/>; computed as <see cref="Kernels.RmsNorm"/> does, so it matches inference bit for bit.</summary>
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, Span<float> y, Span<float> rstd, int rows, float eps)
    {
        int d = weight.Length;
        for (int r = 0; r < rows; r++)
        {
            var xr = x.Slice(r * d, d);
            var yr = y.Slice(r * d, d);
            float scale = 1f / MathF.Sqrt(TensorPrimitives.SumOfSquares(xr) / d + eps);
            rstd[r] = scale;
            TensorPrimitives.Multiply(xr, scale, yr);
            TensorPrimitives.Multiply(yr, weight, yr);
        }
    }

    /// <summary>Adds the gradients into <paramref name="dx"/> and <paramref name="dWeight"/> (none when it is empty: a frozen gain).</summary>
    public static void Backward(ReadOnlySpan<float> dy, ReadOnlySpan<float> x, ReadOnlySpan<float> weight, ReadOnlySpan<float> rstd,
        Span<float> dx, Span<float> dWeight, int rows)
    {
        int d = weight.Length;
        bool gain = !dWeight.IsEmpty;
        for (int r = 0; r < rows; r++)
        {
            var dyr = dy.Slice(r * d, d);
            var xr = x.Slice(r * d, d);
            var dxr = dx.Slice(r * d, d);
            float s = rstd[r];
            double dot = 0; // Σ_i dy_i w_i x_i
            for (int i = 0; i < d; i++) dot += (double)dyr[i] * weight[i] * xr[i];
            float c = (float)(dot * s * s / d);
            for (int j = 0; j < d; j++)
            {
                dxr[j] += s * (dyr[j] * weight[j] - xr[j] * c);
                if (gain) dWeight[j] += dyr[j] * xr[j] * s;
            }
        }
    }
}
