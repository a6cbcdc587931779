namespace LlmShrink.Formats;

/// <summary>
/// Encoders for the K-quant super-blocks (256 elements), following llama.cpp's reference quantizers
/// (<c>quantize_row_q2_K_ref</c> … <c>quantize_row_q6_K_ref</c> in ggml-quants.c):
/// <list type="bullet">
/// <item>Q2_K: groups of 16 with an affine scale and min each (make_qkx2_quants), both stored as 4 bits against fp16 d
/// and dmin — see <see cref="EncodeQ2_K"/>.</item>
/// <item>Q3_K: groups of 16 with a symmetric scale each (make_q3_quants), stored as signed 6 bits against fp16 d — see
/// <see cref="EncodeQ3_K"/>.</item>
/// <item>Q4_K/Q5_K: each sub-block of 32 gets an affine scale and min from <see cref="SearchScaleMin"/> (make_qkx2_quants,
/// a grid search over the scale that refits scale and min by weighted least squares at each step); the eight scales and
/// eight mins are then quantized to 6 bits against the super-block's largest (d = max scale / 63, dmin = max min / 63),
/// packed as <see cref="PackScaleMin"/> shows, and every element is re-rounded against the stored scales.</item>
/// <item>Q6_K: each group of 16 gets a symmetric scale from <see cref="SearchSymmetricScale"/> (make_qx_quants with
/// x²-weighted least squares over 19 candidate scales); the sixteen scales become signed 8-bit multiples of
/// d = max scale / −128, and the elements are re-rounded against them.</item>
/// </list>
/// Rounding to nearest is ties-to-even, as the reference's nearest_int (a float add of 1.5·2²³) does.
/// </summary>
public static class GgmlKQuantizers
{
    private const int SuperBlock = 256;
    /// <summary>Scales below this are treated as an all-zero group (GROUP_MAX_EPS in ggml-quants.c).</summary>
    private const float GroupMaxEps = 1e-15f;

    private static int NearestInt(float value) => (int)MathF.Round(value, MidpointRounding.ToEven);

    /// <summary>block_q4_K = { fp16 d; fp16 dmin; u8 scales[12]; u8 qs[128] }.</summary>
    internal static void EncodeQ4_K(ReadOnlySpan<float> x, Span<byte> block, ReadOnlySpan<float> importance = default)
    {
        Span<byte> levels = stackalloc byte[SuperBlock];
        EncodeScalesAndMins(x, block, levels, maxLevel: 15, rmin: -1f, rdelta: 0.1f, steps: 20, importance);
        var qs = block.Slice(16, 128);
        for (int chunk = 0; chunk < 4; chunk++)
            for (int l = 0; l < 32; l++)
                qs[32 * chunk + l] = (byte)(levels[64 * chunk + l] | levels[64 * chunk + 32 + l] << 4);
    }

    /// <summary>block_q5_K = { fp16 d; fp16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128] }: the fifth bit of element l of
    /// sub-block s is bit s of qh[l].</summary>
    internal static void EncodeQ5_K(ReadOnlySpan<float> x, Span<byte> block, ReadOnlySpan<float> importance = default)
    {
        Span<byte> levels = stackalloc byte[SuperBlock];
        EncodeScalesAndMins(x, block, levels, maxLevel: 31, rmin: -0.5f, rdelta: 0.1f, steps: 15, importance);
        var qh = block.Slice(16, 32);
        var qs = block.Slice(48, 128);
        qh.Clear();
        for (int chunk = 0; chunk < 4; chunk++)
            for (int l = 0; l < 32; l++)
            {
                int low = levels[64 * chunk + l], high = levels[64 * chunk + 32 + l];
                if (low > 15) { low -= 16; qh[l] |= (byte)(1 << (2 * chunk)); }
                if (high > 15) { high -= 16; qh[l] |= (byte)(2 << (2 * chunk)); }
                qs[32 * chunk + l] = (byte)(low | high << 4);
            }
    }

    /// <summary>
    /// The shared first half of Q4_K and Q5_K: per-sub-block scale/min search, 6-bit quantization of both, fp16 d and dmin,
    /// then each element's level in [0, maxLevel] against the stored (quantized) scale and min. Writes bytes 0..15 of the block.
    /// With an importance per element the search minimises Σ importance·(x − x̂)² instead, over the longer scale grid
    /// (−0.9 + 0.05·k, k ≤ 36) llama.cpp's imatrix path (quantize_row_q4_K_impl / q5_K_impl, make_qkx3_quants) uses,
    /// and the 6-bit scales and mins are fitted by <see cref="SearchUnsignedScale"/> weighted by each sub-block's importance.
    /// </summary>
    private static void EncodeScalesAndMins(ReadOnlySpan<float> x, Span<byte> block, Span<byte> levels, int maxLevel, float rmin, float rdelta, int steps,
        ReadOnlySpan<float> importance)
    {
        Span<float> scales = stackalloc float[8];
        Span<float> mins = stackalloc float[8];
        Span<float> weights = stackalloc float[32];
        Span<float> subBlockWeights = stackalloc float[8];
        float maxScale = 0, maxMin = 0; // scales are positive because the min is subtracted
        for (int j = 0; j < 8; j++)
        {
            var sub = x.Slice(32 * j, 32);
            if (!importance.IsEmpty)
            {
                var w = importance.Slice(32 * j, 32);
                scales[j] = SearchScaleMin(sub, w, maxLevel, levels.Slice(32 * j, 32), out mins[j], -0.9f, 0.05f, 36);
                subBlockWeights[j] = System.Numerics.Tensors.TensorPrimitives.Sum(w);
                continue;
            }
            // Weight each element by rms(sub-block) + |x|: larger weights matter more, but small ones are not ignored.
            float sumSquares = 0;
            foreach (float v in sub) sumSquares += v * v;
            float rms = MathF.Sqrt(sumSquares / 32);
            for (int l = 0; l < 32; l++) weights[l] = rms + MathF.Abs(sub[l]);
            scales[j] = SearchScaleMin(sub, weights, maxLevel, levels.Slice(32 * j, 32), out mins[j], rmin, rdelta, steps);
            maxScale = Math.Max(maxScale, scales[j]);
            maxMin = Math.Max(maxMin, mins[j]);
        }

        var packed = block.Slice(4, 12);
        packed.Clear();
        float d, dmin;
        if (importance.IsEmpty)
        {
            float inverseScale = maxScale > 0 ? 63f / maxScale : 0f;
            float inverseMin = maxMin > 0 ? 63f / maxMin : 0f;
            for (int j = 0; j < 8; j++)
                PackScaleMin(packed, j, Math.Min(63, NearestInt(inverseScale * scales[j])), Math.Min(63, NearestInt(inverseMin * mins[j])));
            d = GgmlQuantizers.WriteFp16(block, 0, maxScale / 63f);
            dmin = GgmlQuantizers.WriteFp16(block, 2, maxMin / 63f);
        }
        else
        {
            // As llama.cpp's make_qp_quants: the 6-bit scales and mins are fitted with each sub-block weighted by its total importance.
            d = GgmlQuantizers.WriteFp16(block, 0, SearchUnsignedScale(scales, subBlockWeights, 63));
            dmin = GgmlQuantizers.WriteFp16(block, 2, SearchUnsignedScale(mins, subBlockWeights, 63));
            for (int j = 0; j < 8; j++)
                PackScaleMin(packed, j, d > 0 ? Math.Clamp(NearestInt(scales[j] / d), 0, 63) : 0, dmin > 0 ? Math.Clamp(NearestInt(mins[j] / dmin), 0, 63) : 0);
        }

        for (int j = 0; j < 8; j++)
        {
            var (scale, min) = UnpackScaleMin(packed, j);
            float dj = d * scale;
            if (dj == 0) continue; // keeps the search's levels, as the reference does
            float mj = dmin * min;
            for (int l = 0; l < 32; l++)
                levels[32 * j + l] = (byte)Math.Clamp(NearestInt((x[32 * j + l] + mj) / dj), 0, maxLevel);
        }
    }

    /// <summary>
    /// Fits non-negative values v_j ≈ d·L_j, L_j ∈ [0, maxLevel], minimising Σ w_j (v_j − d·L_j)²: candidate steps
    /// max/(maxLevel + 0.1·k), k = −9..9 (k = 0 is the reference's max/maxLevel), each with its levels rounded and d refit
    /// by weighted least squares (Σ w·v·L / Σ w·L²); the candidate with the smallest error wins. Returns d.
    /// </summary>
    private static float SearchUnsignedScale(ReadOnlySpan<float> values, ReadOnlySpan<float> weights, int maxLevel)
    {
        float max = System.Numerics.Tensors.TensorPrimitives.Max(values);
        if (max <= 0) return 0;
        float best = max / maxLevel, bestError = float.PositiveInfinity;
        for (int k = -9; k <= 9; k++)
        {
            float inverse = (maxLevel + 0.1f * k) / max;
            float sumVL = 0, sumL2 = 0;
            for (int j = 0; j < values.Length; j++)
            {
                int l = Math.Clamp(NearestInt(inverse * values[j]), 0, maxLevel);
                sumVL += weights[j] * values[j] * l;
                sumL2 += weights[j] * l * l;
            }
            float d = sumL2 > 0 ? sumVL / sumL2 : 1 / inverse;
            if (!(d > 0)) continue;
            float error = 0;
            for (int j = 0; j < values.Length; j++)
            {
                float diff = values[j] - d * Math.Clamp(NearestInt(values[j] / d), 0, maxLevel);
                error += weights[j] * diff * diff;
            }
            if (error < bestError) (best, bestError) = (d, error);
        }
        return best;
    }

    /// <summary>
    /// The 12-byte 6-bit packing of eight (scale, min) pairs (the inverse of get_scale_min_k4): pairs 0..3 sit in the low
    /// 6 bits of bytes j (scale) and j+4 (min); pairs 4..7 put their low 4 bits in byte j+4 (scale low nibble, min high
    /// nibble) and their top 2 bits in the free top bits of bytes j−4 (scale) and j (min).
    /// </summary>
    internal static void PackScaleMin(Span<byte> packed, int j, int scale, int min)
    {
        if (j < 4)
        {
            packed[j] |= (byte)scale;
            packed[j + 4] |= (byte)min;
        }
        else
        {
            packed[j + 4] = (byte)((scale & 0xF) | (min & 0xF) << 4);
            packed[j - 4] |= (byte)((scale >> 4) << 6);
            packed[j] |= (byte)((min >> 4) << 6);
        }
    }

    private static (int Scale, int Min) UnpackScaleMin(ReadOnlySpan<byte> packed, int j) =>
        j < 4
            ? (packed[j] & 63, packed[j + 4] & 63)
            : ((packed[j + 4] & 0xF) | (packed[j - 4] >> 6) << 4, (packed[j + 4] >> 4) | (packed[j] >> 6) << 4);

    /// <summary>
    /// make_qkx2_quants: fits x ≈ scale·L − min with integer levels L ∈ [0, maxLevel], minimising the weighted squared error.
    /// Starts from the plain min/max fit (min clipped to ≤ 0), then tries the scales (maxLevel + rmin + rdelta·k)/(max − min)
    /// for k = 0..steps: for each, rounds the levels and solves the 2×2 weighted least-squares system for scale and min
    /// (keeping min ≤ 0), and keeps whichever candidate has the smallest error. Returns the scale; <paramref name="negatedMin"/>
    /// is −min (≥ 0), the value the block stores. With <paramref name="absoluteError"/> the candidates are compared by
    /// Σ w·|x − x̂| instead (make_qkx2_quants' use_mad, which quantize_row_q2_K_ref asks for, so that the few largest
    /// residuals of a 2-bit grid do not dominate the choice); each candidate is still fitted by least squares.
    /// </summary>
    internal static float SearchScaleMin(ReadOnlySpan<float> x, ReadOnlySpan<float> weights, int maxLevel, Span<byte> levels,
        out float negatedMin, float rmin, float rdelta, int steps, bool absoluteError = false)
    {
        int n = x.Length;
        float min = x[0], max = x[0];
        float sumW = weights[0], sumX = sumW * x[0];
        for (int i = 1; i < n; i++)
        {
            if (x[i] < min) min = x[i];
            if (x[i] > max) max = x[i];
            sumW += weights[i];
            sumX += weights[i] * x[i];
        }
        if (min > 0) min = 0;
        if (max == min)
        {
            levels.Clear();
            negatedMin = -min;
            return 0;
        }

        float inverseScale = maxLevel / (max - min);
        float scale = 1 / inverseScale;
        float bestError = 0;
        for (int i = 0; i < n; i++)
        {
            levels[i] = (byte)Math.Clamp(NearestInt(inverseScale * (x[i] - min)), 0, maxLevel);
            bestError += weights[i] * Loss(scale * levels[i] + min - x[i], absoluteError);
        }

        Span<byte> trial = stackalloc byte[n];
        for (int step = 0; step <= steps; step++)
        {
            inverseScale = (rmin + rdelta * step + maxLevel) / (max - min);
            float sumL = 0, sumL2 = 0, sumXL = 0;
            for (int i = 0; i < n; i++)
            {
                int l = Math.Clamp(NearestInt(inverseScale * (x[i] - min)), 0, maxLevel);
                trial[i] = (byte)l;
                float w = weights[i];
                sumL += w * l;
                sumL2 += w * l * l;
                sumXL += w * l * x[i];
            }
            float determinant = sumW * sumL2 - sumL * sumL;
            if (determinant <= 0) continue;
            float trialScale = (sumW * sumXL - sumX * sumL) / determinant;
            float trialMin = (sumL2 * sumX - sumL * sumXL) / determinant;
            if (trialMin > 0)
            {
                trialMin = 0;
                trialScale = sumXL / sumL2;
            }
            float error = 0;
            for (int i = 0; i < n; i++) error += weights[i] * Loss(trialScale * trial[i] + trialMin - x[i], absoluteError);
            if (error < bestError)
            {
                trial.CopyTo(levels);
                bestError = error;
                scale = trialScale;
                min = trialMin;
            }
        }
        negatedMin = -min;
        return scale;
    }

    private static float Loss(float diff, bool absolute) => absolute ? MathF.Abs(diff) : diff * diff;

    /// <summary>block_q6_K = { u8 ql[128]; u8 qh[64]; i8 scales[16]; fp16 d }.</summary>
    internal static void EncodeQ6_K(ReadOnlySpan<float> x, Span<byte> block, ReadOnlySpan<float> importance = default)
    {
        Span<int> levels = stackalloc int[SuperBlock];
        Span<float> scales = stackalloc float[16];
        float maxScale = 0, maxAbsScale = 0;
        for (int g = 0; g < 16; g++)
        {
            var weights = importance.IsEmpty ? default : importance.Slice(16 * g, 16);
            scales[g] = SearchSymmetricScale(x.Slice(16 * g, 16), weights, levels.Slice(16 * g, 16), maxLevel: 32);
            if (MathF.Abs(scales[g]) > maxAbsScale) { maxAbsScale = MathF.Abs(scales[g]); maxScale = scales[g]; }
        }
        block.Clear();
        if (maxAbsScale < GroupMaxEps) return; // all zero: d = 0 and every byte 0

        var groupScales = block.Slice(192, 16);
        float inverseScale = -128f / maxScale;
        float d = GgmlQuantizers.WriteFp16(block, 208, 1 / inverseScale);
        for (int g = 0; g < 16; g++) groupScales[g] = (byte)(sbyte)Math.Min(127, NearestInt(inverseScale * scales[g]));

        for (int g = 0; g < 16; g++)
        {
            float dg = d * (sbyte)groupScales[g];
            if (dg == 0) continue;
            for (int i = 0; i < 16; i++)
                levels[16 * g + i] = (Math.Clamp(NearestInt(x[16 * g + i] / dg), -32, 31) + 32);
        }

        // Per half of 128: element l + 32k keeps its low nibble in ql[l] (k = 0, 2: low/high nibble) or ql[l + 32]
        // (k = 1, 3), and its top 2 bits in bits 2k..2k+1 of qh[l] — the layout DecodeQ6_K reads.
        for (int half = 0; half < 2; half++)
        {
            var ql = block.Slice(64 * half, 64);
            var qh = block.Slice(128 + 32 * half, 32);
            var q = levels.Slice(128 * half, 128);
            for (int l = 0; l < 32; l++)
            {
                int q1 = q[l], q2 = q[l + 32], q3 = q[l + 64], q4 = q[l + 96];
                ql[l] = (byte)((q1 & 0xF) | (q3 & 0xF) << 4);
                ql[l + 32] = (byte)((q2 & 0xF) | (q4 & 0xF) << 4);
                qh[l] = (byte)(q1 >> 4 | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6);
            }
        }
    }

    /// <summary>
    /// make_qx_quants with rmse_type 1: symmetric levels L ∈ [−maxLevel, maxLevel − 1] stored as L + maxLevel. The element
    /// of largest magnitude fixes the first candidate scale (−maxLevel/max); nineteen candidates (maxLevel ± 0.1·k)/max are
    /// tried, each refit by x²-weighted least squares (scale = Σw·x·L / Σw·L²), keeping the one that explains the most
    /// weighted energy (largest (Σw·x·L)²/Σw·L²). Returns the scale. Given <paramref name="weights"/> (an importance per
    /// element, as llama.cpp's imatrix paths pass make_qx_quants), they replace x².
    /// </summary>
    internal static float SearchSymmetricScale(ReadOnlySpan<float> x, ReadOnlySpan<float> weights, Span<int> levels, int maxLevel)
    {
        int n = x.Length;
        float max = SignedLargest(x);
        if (MathF.Abs(max) < GroupMaxEps)
        {
            levels.Clear();
            return 0;
        }

        float inverseScale = -maxLevel / max;
        var (sumLX, sumL2) = RoundSymmetric(x, weights, inverseScale, maxLevel, levels);
        for (int i = 0; i < n; i++) levels[i] += maxLevel;
        float scale = sumL2 > 0 ? sumLX / sumL2 : 1 / inverseScale; // only weights of zero make sumL2 zero
        float best = scale * sumLX;
        Span<int> trial = stackalloc int[n];
        for (int k = -9; k <= 9; k++)
        {
            if (k == 0) continue;
            (sumLX, sumL2) = RoundSymmetric(x, weights, -(maxLevel + 0.1f * k) / max, maxLevel, trial);
            if (sumL2 > 0 && sumLX * sumLX > best * sumL2)
            {
                for (int i = 0; i < n; i++) levels[i] = trial[i] + maxLevel;
                scale = sumLX / sumL2;
                best = scale * sumLX;
            }
        }
        return scale;
    }

    /// <summary>The element of largest magnitude, with its sign (the reference's <c>max</c>; the first one on ties).</summary>
    private static float SignedLargest(ReadOnlySpan<float> x)
    {
        float amax = 0, max = 0;
        foreach (float v in x)
            if (MathF.Abs(v) > amax) { amax = MathF.Abs(v); max = v; }
        return max;
    }

    /// <summary>
    /// Rounds x·<paramref name="inverseScale"/> to levels L ∈ [−maxLevel, maxLevel − 1] and returns Σw·x·L and Σw·L², with
    /// w the given importance or, without one, x² (the reference's weighting).
    /// </summary>
    private static (float SumLX, float SumL2) RoundSymmetric(ReadOnlySpan<float> x, ReadOnlySpan<float> weights, float inverseScale, int maxLevel, Span<int> levels)
    {
        float sumLX = 0, sumL2 = 0;
        for (int i = 0; i < x.Length; i++)
        {
            int l = Math.Clamp(NearestInt(inverseScale * x[i]), -maxLevel, maxLevel - 1);
            levels[i] = l;
            float w = weights.IsEmpty ? x[i] * x[i] : weights[i];
            sumLX += w * x[i] * l;
            sumL2 += w * l * l;
        }
        return (sumLX, sumL2);
    }

    /// <summary>
    /// block_q2_K = { u8 scales[16]; u8 qs[64]; fp16 d; fp16 dmin }, after quantize_row_q2_K_ref: each group of 16 gets an
    /// affine fit x ≈ scale·L − min, L ∈ [0, 3], from <see cref="SearchScaleMin"/> (make_qkx2_quants weighted by |x|, scale
    /// grid (3 − 0.5 + 0.1·k)/(max − min) for k ≤ 15, candidates compared by weighted absolute error); the sixteen scales
    /// and sixteen mins become 4-bit multiples of d = max scale / 15 and dmin = max min / 15, stored as scale | min &lt;&lt; 4,
    /// and every element is re-rounded against the stored pair.
    /// With an importance per element, as quantize_row_q2_K_impl: each group is fitted by make_qkx3_quants (squared error
    /// weighted by the importance, over the grid (3 − 0.9 + 0.05·k)/(max − min), k ≤ 36), and the 4-bit scales and mins
    /// are fitted with each group weighted by its summed importance. llama.cpp does that with make_qp_quants; this uses
    /// <see cref="SearchUnsignedScale"/>, as Q4_K/Q5_K here do, which gave a slightly lower weighted error (by 0.7–2.4 % on
    /// the rows tried) than a port of make_qp_quants, its level-by-level refinement included.
    /// </summary>
    internal static void EncodeQ2_K(ReadOnlySpan<float> x, Span<byte> block, ReadOnlySpan<float> importance = default)
    {
        Span<byte> levels = stackalloc byte[SuperBlock];
        Span<float> scales = stackalloc float[16];
        Span<float> mins = stackalloc float[16];
        Span<float> weights = stackalloc float[16];
        Span<float> groupWeights = stackalloc float[16];
        float maxScale = 0, maxMin = 0; // scales are positive because the min is subtracted
        for (int g = 0; g < 16; g++)
        {
            var sub = x.Slice(16 * g, 16);
            var groupLevels = levels.Slice(16 * g, 16);
            if (importance.IsEmpty)
            {
                for (int l = 0; l < 16; l++) weights[l] = MathF.Abs(sub[l]);
                scales[g] = SearchScaleMin(sub, weights, 3, groupLevels, out mins[g], -0.5f, 0.1f, 15, absoluteError: true);
            }
            else
            {
                var w = importance.Slice(16 * g, 16);
                scales[g] = SearchScaleMin(sub, w, 3, groupLevels, out mins[g], -0.9f, 0.05f, 36);
                groupWeights[g] = System.Numerics.Tensors.TensorPrimitives.Sum(w);
            }
            maxScale = Math.Max(maxScale, scales[g]);
            maxMin = Math.Max(maxMin, mins[g]);
        }

        var packed = block[..16];
        float d, dmin;
        if (importance.IsEmpty)
        {
            float inverseScale = maxScale > 0 ? 15f / maxScale : 0f;
            float inverseMin = maxMin > 0 ? 15f / maxMin : 0f;
            for (int g = 0; g < 16; g++)
                packed[g] = (byte)(Math.Min(15, NearestInt(inverseScale * scales[g])) | Math.Min(15, NearestInt(inverseMin * mins[g])) << 4);
            d = GgmlQuantizers.WriteFp16(block, 80, maxScale / 15f);
            dmin = GgmlQuantizers.WriteFp16(block, 82, maxMin / 15f);
        }
        else
        {
            d = GgmlQuantizers.WriteFp16(block, 80, SearchUnsignedScale(scales, groupWeights, 15));
            dmin = GgmlQuantizers.WriteFp16(block, 82, SearchUnsignedScale(mins, groupWeights, 15));
            for (int g = 0; g < 16; g++)
                packed[g] = (byte)((d > 0 ? Math.Clamp(NearestInt(scales[g] / d), 0, 15) : 0) | (dmin > 0 ? Math.Clamp(NearestInt(mins[g] / dmin), 0, 15) : 0) << 4);
        }

        for (int g = 0; g < 16; g++)
        {
            float dg = d * (packed[g] & 0xF);
            if (dg == 0) continue; // keeps the search's levels, as the reference does
            float mg = dmin * (packed[g] >> 4);
            for (int l = 0; l < 16; l++)
                levels[16 * g + l] = (byte)Math.Clamp(NearestInt((x[16 * g + l] + mg) / dg), 0, 3);
        }

        // Per half of 128, element 32·j + l of the half is bits 2j..2j+1 of byte l of the half's 32 bytes (DecodeQ2_K).
        var qs = block.Slice(16, 64);
        for (int half = 0; half < 2; half++)
            for (int l = 0; l < 32; l++)
            {
                int e = 128 * half + l;
                qs[32 * half + l] = (byte)(levels[e] | levels[e + 32] << 2 | levels[e + 64] << 4 | levels[e + 96] << 6);
            }
    }

    /// <summary>
    /// block_q3_K = { u8 hmask[32]; u8 qs[64]; u8 scales[12]; fp16 d }, after quantize_row_q3_K_ref: each group of 16 gets
    /// a symmetric scale and levels L ∈ [−4, 3] from <see cref="RefineSymmetricLevels"/> (make_q3_quants); the group scale
    /// of largest magnitude fixes d = −scale / 32, so that group stores −32 and the rest signed 6-bit multiples in
    /// [−32, 31] (kept with +32); every element is then re-rounded against its stored group scale.
    /// With an importance per element, as quantize_row_q3_K_impl: each group's scale is make_qx_quants' search weighted
    /// by the importance (<see cref="SearchSymmetricScale"/>, levels [−4, 3]), and the sixteen 6-bit scales come from
    /// the same search over them ([−32, 31]) with each group weighted by its summed importance, its levels kept as found.
    /// </summary>
    internal static void EncodeQ3_K(ReadOnlySpan<float> x, Span<byte> block, ReadOnlySpan<float> importance = default)
    {
        Span<int> levels = stackalloc int[SuperBlock];
        Span<float> scales = stackalloc float[16];
        Span<int> scaleLevels = stackalloc int[16]; // the stored 6-bit scales, group scale / d + 32
        block.Clear();
        float d = 0;
        if (importance.IsEmpty)
        {
            float maxScale = 0, maxAbsScale = 0;
            for (int g = 0; g < 16; g++)
            {
                scales[g] = RefineSymmetricLevels(x.Slice(16 * g, 16), levels.Slice(16 * g, 16), maxLevel: 4);
                if (MathF.Abs(scales[g]) > maxAbsScale) { maxAbsScale = MathF.Abs(scales[g]); maxScale = scales[g]; }
            }
            if (maxScale != 0) // else every group is zero: d = 0 and the scales stay 0
            {
                float inverseScale = -32f / maxScale;
                for (int g = 0; g < 16; g++) scaleLevels[g] = Math.Clamp(NearestInt(inverseScale * scales[g]), -32, 31) + 32;
                d = GgmlQuantizers.WriteFp16(block, 108, 1 / inverseScale);
            }
        }
        else
        {
            Span<float> groupWeights = stackalloc float[16];
            for (int g = 0; g < 16; g++)
            {
                var w = importance.Slice(16 * g, 16);
                scales[g] = SearchSymmetricScale(x.Slice(16 * g, 16), w, levels.Slice(16 * g, 16), maxLevel: 4);
                groupWeights[g] = System.Numerics.Tensors.TensorPrimitives.Sum(w);
            }
            d = GgmlQuantizers.WriteFp16(block, 108, SearchSymmetricScale(scales, groupWeights, scaleLevels, maxLevel: 32));
        }

        // The low nibble of scale g sits in byte g % 8 (low nibble for g < 8, high for g ≥ 8) and its top 2 bits in bits
        // 2·(g/4)..2·(g/4)+1 of byte 8 + g % 4: the layout GgmlBlocks' Q3KScale reads.
        var packedScales = block.Slice(96, 12);
        for (int g = 0; g < 16; g++)
        {
            packedScales[g % 8] |= (byte)((scaleLevels[g] & 0xF) << (g < 8 ? 0 : 4));
            packedScales[8 + g % 4] |= (byte)((scaleLevels[g] >> 4) << (2 * (g / 4)));
        }

        for (int g = 0; g < 16; g++)
        {
            float dg = d * (scaleLevels[g] - 32);
            if (dg == 0) continue; // keeps the search's levels, as the reference does
            for (int l = 0; l < 16; l++)
                levels[16 * g + l] = Math.Clamp(NearestInt(x[16 * g + l] / dg), -4, 3) + 4;
        }

        // A stored level L = q + 4 ∈ [0, 7] splits into its low 2 bits, packed as Q2_K's, and its bit 2 (set exactly when
        // q ≥ 0, i.e. "do not subtract 4"), which for element e goes to bit e / 32 of hmask[e % 32] (DecodeQ3_K).
        var hmask = block[..32];
        var qs = block.Slice(32, 64);
        for (int e = 0; e < SuperBlock; e++) hmask[e % 32] |= (byte)((levels[e] >> 2) << (e / 32));
        for (int half = 0; half < 2; half++)
            for (int l = 0; l < 32; l++)
            {
                int e = 128 * half + l;
                qs[32 * half + l] = (byte)((levels[e] & 3) | (levels[e + 32] & 3) << 2 | (levels[e + 64] & 3) << 4 | (levels[e + 96] & 3) << 6);
            }
    }

    /// <summary>
    /// make_q3_quants with do_rmse, Q3_K's reference group fit: symmetric levels L ∈ [−maxLevel, maxLevel − 1] (returned
    /// as L + maxLevel), starting from the rounding that maps the element of largest magnitude to −maxLevel. Then up to five
    /// sweeps of coordinate descent under x²-weighted least squares: each element in turn is offered the level nearest to
    /// x_i / s, s the least-squares scale of the other elements (Σ'w·x·L / Σ'w·L²), and takes it when that raises
    /// (Σw·x·L)² / Σw·L² — the weighted energy the least-squares scale explains, so the weighted error falls. A sweep
    /// that changes nothing ends the search. Returns that scale, Σw·x·L / Σw·L².
    /// </summary>
    internal static float RefineSymmetricLevels(ReadOnlySpan<float> x, Span<int> levels, int maxLevel)
    {
        int n = x.Length;
        float max = SignedLargest(x);
        if (MathF.Abs(max) < GroupMaxEps)
        {
            levels.Clear();
            return 0;
        }

        var (sumLX, sumL2) = RoundSymmetric(x, [], -maxLevel / max, maxLevel, levels);
        for (int sweep = 0; sweep < 5; sweep++)
        {
            bool changed = false;
            for (int i = 0; i < n; i++)
            {
                float w = x[i] * x[i];
                float othersLX = sumLX - w * x[i] * levels[i];
                if (!(othersLX > 0)) continue;
                float othersL2 = sumL2 - w * levels[i] * levels[i];
                int l = Math.Clamp(NearestInt(x[i] * othersL2 / othersLX), -maxLevel, maxLevel - 1);
                if (l == levels[i]) continue;
                float trialLX = othersLX + w * x[i] * l, trialL2 = othersL2 + w * l * l;
                // (trialLX)²/trialL2 > (sumLX)²/sumL2, cross-multiplied as the reference does.
                if (trialL2 > 0 && trialLX * trialLX * sumL2 > sumLX * sumLX * trialL2)
                {
                    levels[i] = l;
                    sumLX = trialLX;
                    sumL2 = trialL2;
                    changed = true;
                }
            }
            if (!changed) break;
        }
        for (int i = 0; i < n; i++) levels[i] += maxLevel;
        return sumLX / sumL2;
    }
}
