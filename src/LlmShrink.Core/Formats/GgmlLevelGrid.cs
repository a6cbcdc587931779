namespace LlmShrink.Formats;

/// <summary>
/// The values one sub-block of an encoded ggml block can hold: level L ∈ [0, MaxLevel] decodes to
/// Scale·(L − Zero) − Offset, evaluated in float32 in the order <see cref="GgmlBlocks"/> evaluates it (one product, then
/// one subtraction), so <see cref="Value"/> is bit for bit what the decoder gives. Scale is the sub-block's effective
/// step (d·scale of a K-quant sub-block, d of a legacy block) and may be negative or 0; Offset is the K-quants' dmin·min,
/// the negated m of Q4_1/Q5_1, and +0 for the symmetric types, where subtracting +0 leaves every product, −0 included,
/// unchanged.
/// </summary>
public readonly record struct GgmlLevelGrid(float Scale, int Zero, float Offset, int MaxLevel)
{
    /// <summary>The float32 the decoder gives for <paramref name="level"/>.</summary>
    public float Value(int level) => Scale * (level - Zero) - Offset;

    /// <summary>
    /// The level whose <see cref="Value"/> is nearest to <paramref name="w"/> (the lower one on a tie). The algebraic
    /// nearest, (w + Offset)/Scale + Zero rounded, can be one level off after float32 rounding of the decoder's arithmetic,
    /// so its two neighbours are compared by their exact decoded values too. A zero step holds one value; level Zero stands for it.
    /// </summary>
    public int Nearest(float w)
    {
        if (Scale == 0) return Zero;
        float t = Math.Clamp((w + Offset) / Scale + Zero, 0f, MaxLevel);
        int best = float.IsNaN(t) ? Zero : (int)MathF.Round(t, MidpointRounding.ToEven);
        float bestDistance = MathF.Abs(w - Value(best));
        for (int level = Math.Max(0, best - 1); level <= Math.Min(MaxLevel, best + 1); level++)
        {
            float distance = MathF.Abs(w - Value(level));
            if (distance < bestDistance || (distance == bestDistance && level < best)) (best, bestDistance) = (level, distance);
        }
        return best;
    }
}
