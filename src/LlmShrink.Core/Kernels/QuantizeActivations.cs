using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LlmShrink.Kernels;

/// <summary>
/// Symmetric int8 quantization of an activation row in blocks, so that a quantized weight can be multiplied with
/// integer dot products (the Q8_0 / Q8_K activations of llama.cpp, and the per-token scale of W8A8,
/// arXiv:2211.10438): per block d = max|x| / 127 and q = round(x / d) ∈ [−127, 127], so x ≈ d·q.
/// Rounding is half away from zero; the vector path reproduces <see cref="Reference"/> bit for bit.
/// </summary>
public static class QuantizeActivations
{
    /// <summary>
    /// Quantizes <c>x</c> (a whole number of blocks of <paramref name="blockSize"/>) into <paramref name="q"/>, one
    /// scale per block in <paramref name="scales"/>; if <paramref name="sums32"/> is not empty it receives Σq over
    /// every 32 consecutive elements (the K-quant minimum terms need them: Σ(d·s·w − m)·q = d·s·Σw·q − m·Σq).
    /// </summary>
    public static void Quantize(ReadOnlySpan<float> x, int blockSize, Span<sbyte> q, Span<float> scales, Span<int> sums32)
    {
        if (blockSize <= 0 || x.Length % blockSize != 0) throw new ArgumentException($"{x.Length} is not a whole number of blocks of {blockSize}", nameof(blockSize));
        int blocks = x.Length / blockSize;
        if (q.Length < x.Length || scales.Length < blocks) throw new ArgumentException("output spans are too short");
        for (int b = 0; b < blocks; b++)
        {
            var xb = x.Slice(b * blockSize, blockSize);
            float d = Scale(xb);
            scales[b] = d;
            Round(xb, d == 0 ? 0 : 1f / d, q.Slice(b * blockSize, blockSize));
        }
        if (sums32.IsEmpty) return;
        if (x.Length % 32 != 0 || sums32.Length < x.Length / 32) throw new ArgumentException("sums32 needs one entry per 32 elements", nameof(sums32));
        for (int s = 0; s < x.Length / 32; s++)
        {
            var block = q.Slice(32 * s, 32);
            if (Avx2.IsSupported)
            {
                // Ones against the 32 codes (vpdpbusd or vpmaddubsw/vpmaddwd) and a horizontal sum: the prompt's K-quant
                // minimum terms need Σq for every 32 activations of every row, on the calling thread.
                sums32[s] = Vector256.Sum(GgmlMatMul.DotUnsigned(Vector256<byte>.One, Vector256.Create<sbyte>(block)));
                continue;
            }
            int sum = 0;
            foreach (sbyte v in block) sum += v;
            sums32[s] = sum;
        }
    }

    /// <summary>d = max|x| / 127.</summary>
    private static float Scale(ReadOnlySpan<float> x) => Math.Abs(System.Numerics.Tensors.TensorPrimitives.MaxMagnitude(x)) / 127f;

    /// <summary>q[i] = round(x[i]·inverse), half away from zero, 16 lanes at a time.</summary>
    private static unsafe void Round(ReadOnlySpan<float> x, float inverse, Span<sbyte> q)
    {
        int i = 0;
        if (Avx512F.IsSupported && x.Length >= 16)
        {
            var scale = Vector512.Create(inverse);
            fixed (float* px = x)
            fixed (sbyte* pq = q)
                for (; i <= x.Length - 16; i += 16)
                {
                    var rounded = RoundHalfAwayFromZero(Vector512.Load(px + i) * scale);
                    Avx512F.ConvertToVector128SByteWithSaturation(Vector512.ConvertToInt32(rounded)).Store(pq + i);
                }
        }
        for (; i < x.Length; i++) q[i] = (sbyte)MathF.Round(x[i] * inverse, MidpointRounding.AwayFromZero);
    }

    /// <summary>
    /// MathF.Round(v, AwayFromZero) per lane: t = trunc(v) and the fraction v − t are exact in float (t has no bits
    /// below v's), so stepping t one unit away from zero when |v − t| ≥ ½ rounds exactly like the scalar call.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> RoundHalfAwayFromZero(Vector512<float> v)
    {
        var truncated = Vector512.Truncate(v);
        var atLeastHalf = Vector512.GreaterThanOrEqual(Vector512.Abs(v - truncated), Vector512.Create(0.5f));
        return truncated + (Vector512.CopySign(Vector512<float>.One, v) & atLeastHalf);
    }

    /// <summary>The plain definition of one block: what the vector path is tested against.</summary>
    public static float Reference(ReadOnlySpan<float> x, Span<sbyte> q)
    {
        float amax = 0;
        foreach (float v in x) amax = Math.Max(amax, Math.Abs(v));
        float d = amax / 127f;
        float inverse = d == 0 ? 0 : 1f / d;
        for (int i = 0; i < x.Length; i++) q[i] = (sbyte)MathF.Round(x[i] * inverse, MidpointRounding.AwayFromZero);
        return d;
    }
}
