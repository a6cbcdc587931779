using LlmShrink.Model;

namespace LlmShrink.Kernels;

/// <summary>
/// Rotary position embedding (Su et al. 2021, "RoFormer"): pair p of a head is rotated by the angle
/// position · θ_p with θ_p = base^(−2p/d). Which dimensions form pair p depends on <see cref="RopeStyle"/>.
/// </summary>
public sealed class Rope
{
    public RopeStyle Style { get; }
    public int HeadDim { get; }
    /// <summary>θ_p for p in [0, d/2), after any Llama 3 scaling or per-pair frequency factors.</summary>
    public double[] Frequencies { get; }

    public Rope(RopeStyle style, double[] frequencies)
    {
        Style = style;
        Frequencies = frequencies;
        HeadDim = 2 * frequencies.Length;
    }

    /// <summary>
    /// The model's frequencies. <paramref name="frequencyFactors"/> (GGUF's rope_freqs, Llama 3.1 scaling baked in by
    /// llama.cpp's converter) divides each θ_p; otherwise <see cref="ModelConfig.RopeScaling"/> applies the llama3 rule.
    /// </summary>
    public static Rope ForModel(ModelConfig config, ReadOnlySpan<float> frequencyFactors)
    {
        int half = config.HeadDim / 2;
        var theta = new double[half];
        for (int p = 0; p < half; p++) theta[p] = Math.Pow(config.RopeTheta, -2.0 * p / config.HeadDim);
        if (!frequencyFactors.IsEmpty)
        {
            if (frequencyFactors.Length != half)
                throw new ArgumentException($"rope frequency factors have {frequencyFactors.Length} entries, expected {half}");
            for (int p = 0; p < half; p++) theta[p] /= frequencyFactors[p];
        }
        else if (config.RopeScaling is { } scaling) ApplyLlama3Scaling(theta, scaling);
        return new Rope(config.RopeStyle, theta);
    }

    /// <summary>
    /// Llama 3's rule (rope_type "llama3"): frequencies whose wavelength 2π/θ exceeds originalMax/lowFreqFactor are
    /// slowed by <c>factor</c>; those shorter than originalMax/highFreqFactor are kept; in between the two are blended
    /// linearly in originalMax/wavelength.
    /// </summary>
    public static void ApplyLlama3Scaling(double[] theta, Llama3RopeScaling s)
    {
        double lowFreqWavelength = s.OriginalMaxPositions / (double)s.LowFreqFactor;
        double highFreqWavelength = s.OriginalMaxPositions / (double)s.HighFreqFactor;
        for (int p = 0; p < theta.Length; p++)
        {
            double wavelength = 2 * Math.PI / theta[p];
            if (wavelength < highFreqWavelength) continue;
            if (wavelength > lowFreqWavelength) { theta[p] /= s.Factor; continue; }
            double smooth = (s.OriginalMaxPositions / wavelength - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
            theta[p] = (1 - smooth) * theta[p] / s.Factor + smooth * theta[p];
        }
    }

    /// <summary>cos and sin of position·θ_p for every pair p (computed in double: large positions lose no precision).</summary>
    public void Angles(int position, Span<float> cos, Span<float> sin)
    {
        for (int p = 0; p < Frequencies.Length; p++)
        {
            (double s, double c) = Math.SinCos(position * Frequencies[p]);
            cos[p] = (float)c;
            sin[p] = (float)s;
        }
    }

    /// <summary>Rotates every head of <paramref name="heads"/> (consecutive vectors of <see cref="HeadDim"/>) in place.</summary>
    public void Rotate(Span<float> heads, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        int half = HeadDim / 2;
        for (int h = 0; h + HeadDim <= heads.Length; h += HeadDim)
        {
            var head = heads.Slice(h, HeadDim);
            for (int p = 0; p < half; p++)
            {
                // RotateHalf pairs (p, p + d/2); Interleaved pairs (2p, 2p + 1).
                int a = Style == RopeStyle.RotateHalf ? p : 2 * p;
                int b = Style == RopeStyle.RotateHalf ? p + half : 2 * p + 1;
                float x0 = head[a], x1 = head[b];
                head[a] = x0 * cos[p] - x1 * sin[p];
                head[b] = x0 * sin[p] + x1 * cos[p];
            }
        }
    }
}
