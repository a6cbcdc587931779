using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LlmShrink.Compression.Quantization;

/// <summary>
/// Exact int8 × int8 → int32 products C[m, n] = Σ_k A[m, k] · B[n, k] (both operands row-major along k, as
/// activations [tokens, in] and weights [out, in] are). Three implementations that must agree bit for bit:
///   AVX-VNNI  (vpdpbusd, 256-bit): it multiplies UNSIGNED by signed bytes, so A is biased to a + 128 and
///             128 · Σ_k B[n, k] is subtracted afterwards. .NET 10 exposes no 512-bit form of this
///             instruction for AVX-512 VNNI CPUs (only the newer AVX-VNNI-INT8), hence 256 bits.
///   AVX-512BW (vpmovsxbw + vpmaddwd): bytes widened to int16, adjacent products summed into int32.
///   scalar    reference.
/// Sums are exact while k · 255 · 128 fits in int32 (k ≤ 65,536).
/// </summary>
public static class Int8Matmul
{
    public const int MaxDepth = 65_536;

    /// <summary>The fastest path this CPU supports.</summary>
    public static void Multiply(ReadOnlySpan<sbyte> a, ReadOnlySpan<sbyte> b, Span<int> c, int m, int n, int k)
    {
        Check(a, b, c, m, n, k);
        if (AvxVnni.IsSupported) MultiplyVnni(a, b, c, m, n, k);
        else if (Avx512BW.IsSupported) MultiplyAvx512(a, b, c, m, n, k);
        else MultiplyScalar(a, b, c, m, n, k);
    }

    public static void MultiplyScalar(ReadOnlySpan<sbyte> a, ReadOnlySpan<sbyte> b, Span<int> c, int m, int n, int k)
    {
        Check(a, b, c, m, n, k);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                int sum = 0;
                for (int kk = 0; kk < k; kk++) sum += a[i * k + kk] * b[j * k + kk];
                c[i * n + j] = sum;
            }
    }

    public static unsafe void MultiplyVnni(ReadOnlySpan<sbyte> a, ReadOnlySpan<sbyte> b, Span<int> c, int m, int n, int k)
    {
        if (!AvxVnni.IsSupported) throw new PlatformNotSupportedException("AVX-VNNI");
        Check(a, b, c, m, n, k);
        int vectorK = k & ~31;
        var biasCorrection = new int[n]; // 128 · Σ_{k < vectorK} B[j, k]
        for (int j = 0; j < n; j++)
        {
            int sum = 0;
            for (int kk = 0; kk < vectorK; kk++) sum += b[j * k + kk];
            biasCorrection[j] = 128 * sum;
        }
        var signFlip = Vector256.Create((byte)0x80);
        fixed (sbyte* pa = a, pb = b)
        fixed (int* pc = c)
            for (int i = 0; i < m; i++)
            {
                sbyte* row = pa + (long)i * k;
                int j = 0;
                for (; j + 4 <= n; j += 4)
                {
                    sbyte* b0 = pb + (long)j * k, b1 = b0 + k, b2 = b1 + k, b3 = b2 + k;
                    Vector256<int> s0 = default, s1 = default, s2 = default, s3 = default;
                    for (int kk = 0; kk < vectorK; kk += 32)
                    {
                        // a + 128 as an unsigned byte is a with its top bit flipped.
                        var x = Vector256.Xor(Vector256.Load((byte*)row + kk), signFlip);
                        s0 = AvxVnni.MultiplyWideningAndAdd(s0, x, Vector256.Load(b0 + kk));
                        s1 = AvxVnni.MultiplyWideningAndAdd(s1, x, Vector256.Load(b1 + kk));
                        s2 = AvxVnni.MultiplyWideningAndAdd(s2, x, Vector256.Load(b2 + kk));
                        s3 = AvxVnni.MultiplyWideningAndAdd(s3, x, Vector256.Load(b3 + kk));
                    }
                    pc[(long)i * n + j] = Vector256.Sum(s0) - biasCorrection[j] + Tail(row, b0, vectorK, k);
                    pc[(long)i * n + j + 1] = Vector256.Sum(s1) - biasCorrection[j + 1] + Tail(row, b1, vectorK, k);
                    pc[(long)i * n + j + 2] = Vector256.Sum(s2) - biasCorrection[j + 2] + Tail(row, b2, vectorK, k);
                    pc[(long)i * n + j + 3] = Vector256.Sum(s3) - biasCorrection[j + 3] + Tail(row, b3, vectorK, k);
                }
                for (; j < n; j++)
                {
                    sbyte* bj = pb + (long)j * k;
                    Vector256<int> s = default;
                    for (int kk = 0; kk < vectorK; kk += 32)
                        s = AvxVnni.MultiplyWideningAndAdd(s, Vector256.Xor(Vector256.Load((byte*)row + kk), signFlip), Vector256.Load(bj + kk));
                    pc[(long)i * n + j] = Vector256.Sum(s) - biasCorrection[j] + Tail(row, bj, vectorK, k);
                }
            }
    }

    public static unsafe void MultiplyAvx512(ReadOnlySpan<sbyte> a, ReadOnlySpan<sbyte> b, Span<int> c, int m, int n, int k)
    {
        if (!Avx512BW.IsSupported) throw new PlatformNotSupportedException("AVX-512BW");
        Check(a, b, c, m, n, k);
        int vectorK = k & ~31;
        fixed (sbyte* pa = a, pb = b)
        fixed (int* pc = c)
            for (int i = 0; i < m; i++)
            {
                sbyte* row = pa + (long)i * k;
                for (int j = 0; j < n; j++)
                {
                    sbyte* bj = pb + (long)j * k;
                    Vector512<int> s = default;
                    for (int kk = 0; kk < vectorK; kk += 32)
                    {
                        var x = Avx512BW.ConvertToVector512Int16(Vector256.Load(row + kk));
                        var y = Avx512BW.ConvertToVector512Int16(Vector256.Load(bj + kk));
                        s = Avx512F.Add(s, Avx512BW.MultiplyAddAdjacent(x, y));
                    }
                    pc[(long)i * n + j] = Vector512.Sum(s) + Tail(row, bj, vectorK, k);
                }
            }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe int Tail(sbyte* a, sbyte* b, int from, int to)
    {
        int sum = 0;
        for (int kk = from; kk < to; kk++) sum += a[kk] * b[kk];
        return sum;
    }

    static void Check(ReadOnlySpan<sbyte> a, ReadOnlySpan<sbyte> b, Span<int> c, int m, int n, int k)
    {
        if (a.Length != (long)m * k || b.Length != (long)n * k || c.Length != (long)m * n)
            throw new ArgumentException($"int8 matmul: operands do not match m={m}, n={n}, k={k}");
        if (k > MaxDepth) throw new ArgumentException($"int8 matmul: depth {k} could overflow int32 (at most {MaxDepth})");
    }
}
