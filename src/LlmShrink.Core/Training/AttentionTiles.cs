using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LlmShrink.Training;

/// <summary>
/// The small products inside <see cref="AttentionOp"/>: C[r, j] (+)= Σ_k A[r, k]·B[k, j] for a tile of 4 rows r and a
/// width j that is a multiple of 16, with B row-major (each B row is read as whole vectors) and A read one element at a
/// time through two strides, so that Aᵀ costs nothing (dK = dSᵀ·Q reads dS down its columns).
/// <para>Each A element is broadcast and multiplies a row of B into accumulators that stay in registers for the whole
/// k loop: an attention score vector for 16 keys is d broadcast-FMAs against Kᵀ, with no horizontal sum, and an output
/// row Σ_s p_ts·v_s is never loaded or stored inside the loop. Per k, a 4×32 tile costs 2 B loads and 4 broadcasts for
/// 8 FMAs, so it is bound by the FMA unit (one 512-bit FMA per cycle on Zen 4) and its 8 independent accumulators cover
/// the FMA latency (4 cycles).</para>
/// </summary>
internal static unsafe class AttentionTiles
{
    /// <summary>
    /// C[r, 0..width) = (C +) Σ_{k &lt; count} A[r, k]·B[k, 0..width) for r &lt; <paramref name="rows"/> (at most 4), where
    /// A[r, k] = a[r·aRow + k·aStep], B[k, j] = b[k·bStride + j], C[r, j] = c[r·cRow + j]. Rows r in [rows, 4) of C
    /// are written too (with row 0's products): callers give C four rows, and A's missing rows are never read.
    /// </summary>
    public static void Multiply(float* a, nint aRow, nint aStep, int rows, float* b, nint bStride, int count, float* c, nint cRow, int width, bool add)
    {
        if ((uint)(rows - 1) >= 4 || width % 16 != 0) throw new ArgumentOutOfRangeException(nameof(rows), $"a tile has 1–4 rows and a width that is a multiple of 16, not {rows}×{width}");
        float* a1 = rows > 1 ? a + aRow : a, a2 = rows > 2 ? a + 2 * aRow : a, a3 = rows > 3 ? a + 3 * aRow : a;
        int j = 0;
        for (; j + 32 <= width; j += 32) Tile32(a, a1, a2, a3, aStep, b + j, bStride, count, c + j, cRow, add);
        if (j < width) Tile16(a, a1, a2, a3, aStep, b + j, bStride, count, c + j, cRow, add);
    }

    /// <summary>The scalar definition of <see cref="Multiply"/> (rows &lt; <paramref name="rows"/> only), which the tests compare it against.</summary>
    public static void Reference(float* a, nint aRow, nint aStep, int rows, float* b, nint bStride, int count, float* c, nint cRow, int width, bool add)
    {
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < width; j++)
            {
                float sum = add ? c[r * cRow + j] : 0;
                for (int k = 0; k < count; k++) sum += a[r * aRow + k * aStep] * b[k * bStride + j];
                c[r * cRow + j] = sum;
            }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile32(float* a0, float* a1, float* a2, float* a3, nint aStep, float* b, nint bStride, int count, float* c, nint cRow, bool add)
    {
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default;
        nint ak = 0;
        for (int k = 0; k < count; k++, ak += aStep, b += bStride)
        {
            var b0 = Vector512.Load(b);
            var b1 = Vector512.Load(b + 16);
            var x = Vector512.Create(a0[ak]);
            c00 = Vector512.FusedMultiplyAdd(x, b0, c00); c01 = Vector512.FusedMultiplyAdd(x, b1, c01);
            x = Vector512.Create(a1[ak]);
            c10 = Vector512.FusedMultiplyAdd(x, b0, c10); c11 = Vector512.FusedMultiplyAdd(x, b1, c11);
            x = Vector512.Create(a2[ak]);
            c20 = Vector512.FusedMultiplyAdd(x, b0, c20); c21 = Vector512.FusedMultiplyAdd(x, b1, c21);
            x = Vector512.Create(a3[ak]);
            c30 = Vector512.FusedMultiplyAdd(x, b0, c30); c31 = Vector512.FusedMultiplyAdd(x, b1, c31);
        }
        Put(c, c00, add); Put(c + 16, c01, add);
        Put(c + cRow, c10, add); Put(c + cRow + 16, c11, add);
        Put(c + 2 * cRow, c20, add); Put(c + 2 * cRow + 16, c21, add);
        Put(c + 3 * cRow, c30, add); Put(c + 3 * cRow + 16, c31, add);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile16(float* a0, float* a1, float* a2, float* a3, nint aStep, float* b, nint bStride, int count, float* c, nint cRow, bool add)
    {
        Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default;
        nint ak = 0;
        for (int k = 0; k < count; k++, ak += aStep, b += bStride)
        {
            var b0 = Vector512.Load(b);
            c0 = Vector512.FusedMultiplyAdd(Vector512.Create(a0[ak]), b0, c0);
            c1 = Vector512.FusedMultiplyAdd(Vector512.Create(a1[ak]), b0, c1);
            c2 = Vector512.FusedMultiplyAdd(Vector512.Create(a2[ak]), b0, c2);
            c3 = Vector512.FusedMultiplyAdd(Vector512.Create(a3[ak]), b0, c3);
        }
        Put(c, c0, add); Put(c + cRow, c1, add); Put(c + 2 * cRow, c2, add); Put(c + 3 * cRow, c3, add);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put(float* c, Vector512<float> sum, bool add) => (add ? Vector512.Load(c) + sum : sum).Store(c);
}
