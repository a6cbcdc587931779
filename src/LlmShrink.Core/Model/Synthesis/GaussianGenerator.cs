using System.Numerics.Tensors;

namespace LlmShrink.Model.Synthesis;

/// <summary>
/// Seeded normal random numbers fast enough to fill billions of weights: xoshiro256** (Blackman &amp; Vigna, 2018)
/// for uniform bits, the Box–Muller transform (z = √(−2 ln u₁)·cos 2πu₂, and the sine for a second value)
/// evaluated a block at a time with vectorised <see cref="TensorPrimitives"/>.
/// </summary>
public sealed class GaussianGenerator
{
    private ulong _s0, _s1, _s2, _s3;
    private float[] _radius = [], _angle = [], _sin = [], _cos = [];

    public GaussianGenerator(ulong seed)
    {
        // xoshiro's state must not be all zero; SplitMix64 spreads any seed (even 0) over the four words.
        _s0 = SplitMix64(ref seed); _s1 = SplitMix64(ref seed); _s2 = SplitMix64(ref seed); _s3 = SplitMix64(ref seed);
    }

    /// <summary>An independent stream for item <paramref name="index"/> of a seeded collection (e.g. one per tensor).</summary>
    public static GaussianGenerator ForItem(ulong seed, long index)
    {
        ulong mixed = seed ^ (0x9E3779B97F4A7C15UL * (ulong)(index + 1));
        return new GaussianGenerator(SplitMix64(ref mixed));
    }

    public ulong NextUInt64()
    {
        ulong result = ulong.RotateLeft(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0; _s3 ^= _s1; _s1 ^= _s2; _s0 ^= _s3;
        _s2 ^= t;
        _s3 = ulong.RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>Fills <paramref name="destination"/> with independent N(0, <paramref name="std"/>²) samples.</summary>
    public void FillNormal(Span<float> destination, float std)
    {
        int pairs = (destination.Length + 1) / 2;
        if (_radius.Length < pairs) { _radius = new float[pairs]; _angle = new float[pairs]; _sin = new float[pairs]; _cos = new float[pairs]; }
        var radius = _radius.AsSpan(0, pairs);
        var angle = _angle.AsSpan(0, pairs);
        const float inv24 = 1f / (1 << 24);
        for (int i = 0; i < pairs; i++)
        {
            // Two 24-bit uniforms from one draw: u₁ in (0, 1] so its log is finite, u₂ in [0, 1).
            ulong bits = NextUInt64();
            radius[i] = ((bits >> 40) + 1) * inv24;
            angle[i] = ((bits >> 16) & 0xFFFFFF) * inv24;
        }
        TensorPrimitives.Log(radius, radius);
        TensorPrimitives.Multiply(radius, -2f, radius);
        TensorPrimitives.Sqrt(radius, radius);
        TensorPrimitives.Multiply(radius, std, radius);
        TensorPrimitives.Multiply(angle, 2 * MathF.PI, angle);
        var sin = _sin.AsSpan(0, pairs);
        var cos = _cos.AsSpan(0, pairs);
        TensorPrimitives.SinCos(angle, sin, cos);

        int half = destination.Length / 2;
        TensorPrimitives.Multiply(radius[..half], cos[..half], destination[..half]);
        TensorPrimitives.Multiply(radius[..(destination.Length - half)], sin[..(destination.Length - half)], destination[half..]);
    }

    private static ulong SplitMix64(ref ulong state)
    {
        ulong z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
