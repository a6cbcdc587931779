using System.Numerics.Tensors;
using LlmShrink.LinearAlgebra;

namespace LlmShrink.Compression.Quantization;

/// <summary>One linear layer of an AWQ group: W row-major [Rows, in]. Clipping search is usually skipped
/// for q and k projections (their errors are amplified by the attention softmax), as the reference does.</summary>
public sealed record AwqLayer(float[] Weight, int Rows, bool SearchClipping = true);

/// <param name="Grid">Number of α values tried, α = k/Grid for k = 0 .. Grid−1 (and clipping shrink step 1/Grid).</param>
/// <param name="MaxShrink">Clipping tries max-abs shrunk by up to this fraction.</param>
/// <param name="ClipTokens">Calibration tokens kept (evenly strided) for the clipping search.</param>
public sealed record AwqOptions(int Grid = 20, double MaxShrink = 0.5, int ClipTokens = 512);

/// <param name="Scales">Per-input-channel s [in]: the layers now hold W·diag(s), so the producer of their
/// input must be divided by s (the preceding RMSNorm weight, or the previous linear's output rows).</param>
/// <param name="Alpha">The chosen exponent in s = s_x^α.</param>
/// <param name="Quantized">Each layer's W·diag(s), clipped, quantized with the scheme.</param>
public sealed record AwqResult(float[] Scales, double Alpha, QuantizedMatrix[] Quantized);

/// <summary>
/// AWQ: Activation-aware Weight Quantization (Lin et al. 2023, §3.2–3.3), for one group of linear layers
/// that read the same input X [tokens, in] (q/k/v; gate/up; v→o; up→down).
/// Scaling weight channel j up by s_j (and its input down by s_j) shrinks its relative rounding error, so
/// salient channels — those with large mean |x_j| — are protected. s = s_x^α with s_x = mean_t |x_tj|,
/// α from a grid search minimizing the group's output error ‖X Wᵀ − (X/s) Q(W·diag(s))ᵀ‖² (the reference
/// llm-awq auto_scale measures it on the whole block; here on the group's own linear outputs).
/// Then per layer, per (row, group), the weight range is clipped to the max-abs that minimizes the output
/// error on a token subsample (llm-awq auto_clip).
/// </summary>
public static class Awq
{
    public static AwqResult QuantizeGroup(IReadOnlyList<AwqLayer> layers, ReadOnlySpan<float> x, int tokens, int columns,
        QuantScheme scheme, AwqOptions? options = null)
    {
        options ??= new AwqOptions();
        if (x.Length != (long)tokens * columns)
            throw new ArgumentException($"AWQ: input has {x.Length} values, not {tokens}×{columns}");
        foreach (var layer in layers)
            if (layer.Weight.Length != (long)layer.Rows * columns)
                throw new ArgumentException($"AWQ: a weight has {layer.Weight.Length} values, not {layer.Rows}×{columns}");

        var (scales, alpha) = SearchScales(layers, x, tokens, columns, scheme, options);

        var xScaled = x.ToArray();
        for (int t = 0; t < tokens; t++)
            TensorPrimitives.Divide(xScaled.AsSpan(t * columns, columns), scales, xScaled.AsSpan(t * columns, columns));
        var quantized = new QuantizedMatrix[layers.Count];
        for (int l = 0; l < layers.Count; l++)
        {
            var w = ScaleColumns(layers[l].Weight, layers[l].Rows, columns, scales);
            if (layers[l].SearchClipping)
                Clip(w, layers[l].Rows, columns, SearchClipping(w, layers[l].Rows, columns, xScaled, tokens, scheme, options), scheme);
            quantized[l] = Rtn.Quantize(w, layers[l].Rows, columns, scheme);
        }
        return new AwqResult(scales, alpha, quantized);
    }

    /// <summary>s_x[j] = mean over tokens of |x_tj|.</summary>
    public static float[] ActivationMagnitude(ReadOnlySpan<float> x, int tokens, int columns)
    {
        var sum = new double[columns];
        for (int t = 0; t < tokens; t++)
            for (int j = 0; j < columns; j++) sum[j] += Math.Abs(x[t * columns + j]);
        return sum.Select(v => (float)(v / Math.Max(tokens, 1))).ToArray();
    }

    /// <summary>s = max(s_x^α, 1e-4) / sqrt(max(s) · min(s)) — the reference's normalization, which centres s around 1.</summary>
    public static float[] ScalesFor(float[] activationMagnitude, double alpha)
    {
        var s = activationMagnitude.Select(v => (float)Math.Max(Math.Pow(v, alpha), 1e-4)).ToArray();
        float norm = MathF.Sqrt(TensorPrimitives.Max(s) * TensorPrimitives.Min(s));
        TensorPrimitives.Divide(s, norm, s);
        return s;
    }

    /// <summary>The group's output error for the scales s: Σ_layers ‖X (W − Q(W·diag(s))·diag(s)⁻¹)ᵀ‖².</summary>
    public static double GroupError(IReadOnlyList<AwqLayer> layers, ReadOnlySpan<float> x, int tokens, int columns,
        float[] scales, QuantScheme scheme)
    {
        double total = 0;
        foreach (var layer in layers)
        {
            var diff = ScaleColumns(layer.Weight, layer.Rows, columns, scales);
            Rtn.FakeQuantize(diff, layer.Rows, columns, scheme);
            for (int r = 0; r < layer.Rows; r++)
            {
                var row = diff.AsSpan(r * columns, columns);
                TensorPrimitives.Divide(row, scales, row);
                TensorPrimitives.Subtract(layer.Weight.AsSpan(r * columns, columns), row, row);
            }
            total += OutputEnergy(x, tokens, columns, diff, layer.Rows);
        }
        return total;
    }

    static (float[] Scales, double Alpha) SearchScales(IReadOnlyList<AwqLayer> layers, ReadOnlySpan<float> x, int tokens,
        int columns, QuantScheme scheme, AwqOptions options)
    {
        var magnitude = ActivationMagnitude(x, tokens, columns);
        double bestError = double.PositiveInfinity, bestAlpha = 0;
        float[] best = ScalesFor(magnitude, 0);
        for (int k = 0; k < options.Grid; k++)
        {
            double alpha = (double)k / options.Grid;
            var s = ScalesFor(magnitude, alpha);
            double error = GroupError(layers, x, tokens, columns, s, scheme);
            if (error < bestError)
            {
                (bestError, bestAlpha, best) = (error, alpha, s);
            }
        }
        return (best, bestAlpha);
    }

    /// <summary>
    /// Best clipping threshold per (row, group), [groups, rows]: tries max|w| · (1 − i/Grid) for
    /// i &lt; MaxShrink·Grid, quantizes the clamped group, and keeps the threshold with the least mean squared
    /// error of the group's partial output Σ_{j∈group} x_tj w_j over an evenly strided token subsample.
    /// </summary>
    public static float[] SearchClipping(float[] w, int rows, int columns, ReadOnlySpan<float> x, int tokens,
        QuantScheme scheme, AwqOptions options)
    {
        int width = scheme.GroupWidth(columns), groups = scheme.GroupCount(columns);
        int step = Math.Max(1, tokens / Math.Max(1, options.ClipTokens));
        var sampled = new List<int>();
        for (int t = 0; t < tokens; t += step) sampled.Add(t);
        var xs = new float[sampled.Count * columns];
        for (int k = 0; k < sampled.Count; k++) x.Slice(sampled[k] * columns, columns).CopyTo(xs.AsSpan(k * columns));
        int shrinks = Math.Max(1, (int)(options.MaxShrink * options.Grid));

        var best = new float[groups * rows];
        Parallel.For(0, rows, r =>
        {
            Span<float> clipped = stackalloc float[width], delta = stackalloc float[width];
            for (int g = 0; g < groups; g++)
            {
                int start = g * width, count = Math.Min(width, columns - start);
                var original = w.AsSpan(r * columns + start, count);
                float maxAbs = MathF.Abs(TensorPrimitives.MaxMagnitude(original));
                double bestError = double.PositiveInfinity;
                for (int i = 0; i < shrinks; i++)
                {
                    float limit = maxAbs * (1f - (float)i / options.Grid);
                    TensorPrimitives.Clamp(original, -limit, limit, clipped[..count]);
                    var grid = QuantGrid.Fit(clipped[..count], scheme.Bits, scheme.Symmetric);
                    for (int j = 0; j < count; j++) delta[j] = grid.Quantize(clipped[j]) - original[j];
                    double error = 0;
                    for (int k = 0; k < sampled.Count; k++)
                    {
                        double d = TensorPrimitives.Dot(xs.AsSpan(k * columns + start, count), delta[..count]);
                        error += d * d;
                    }
                    if (error < bestError)
                    {
                        bestError = error;
                        best[g * rows + r] = limit;
                    }
                }
            }
        });
        return best;
    }

    /// <summary>Clamps every (row, group) of W to ±limit (limits [groups, rows] from <see cref="SearchClipping"/>).</summary>
    public static void Clip(float[] w, int rows, int columns, float[] limits, QuantScheme scheme)
    {
        int width = scheme.GroupWidth(columns);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
            {
                float limit = limits[c / width * rows + r];
                w[r * columns + c] = Math.Clamp(w[r * columns + c], -limit, limit);
            }
    }

    static float[] ScaleColumns(float[] w, int rows, int columns, float[] scales)
    {
        var scaled = new float[w.Length];
        for (int r = 0; r < rows; r++)
            TensorPrimitives.Multiply(w.AsSpan(r * columns, columns), scales, scaled.AsSpan(r * columns, columns));
        return scaled;
    }

    /// <summary>‖X Dᵀ‖² for X [tokens, columns] and D [rows, columns], via the GEMM kernel on Dᵀ.</summary>
    static double OutputEnergy(ReadOnlySpan<float> x, int tokens, int columns, float[] d, int rows)
    {
        var dT = new float[columns * rows];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++) dT[c * rows + r] = d[r * columns + c];
        var y = new float[tokens * rows];
        DenseKernels.MultiplyAdd<float>(y, rows, x, columns, dT, rows, tokens, rows, columns);
        return TensorPrimitives.SumOfSquares(y);
    }
}
