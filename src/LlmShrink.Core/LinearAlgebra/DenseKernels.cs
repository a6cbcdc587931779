using System.Buffers;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LlmShrink.LinearAlgebra;

/// <summary>
/// C += A · B for row-major float or double matrices with leading dimensions (the GEMM behind GPTQ's lazy
/// batch update and the blocked Cholesky). B is first copied into panels of 4 vectors' width so the
/// micro-kernel streams it contiguously (strided rows of a big matrix alias in the L1 cache); each
/// micro-kernel call keeps a 4-row × 4-vector tile of C in 16 registers and does 16 FMAs per step of k
/// for 4 vector loads and 4 broadcasts.
/// </summary>
static class DenseKernels
{
    const int TileRows = 4, TileVectors = 4;

    public static unsafe void MultiplyAdd<T>(Span<T> c, int ldc, ReadOnlySpan<T> a, int lda, ReadOnlySpan<T> b, int ldb,
        int m, int n, int k) where T : unmanaged, INumberBase<T>
    {
        if (m <= 0 || n <= 0 || k <= 0) return;
        int lanes = Vector512<T>.Count, panelWidth = TileVectors * lanes;
        int panels = (n + panelWidth - 1) / panelWidth;
        T[] packed = ArrayPool<T>.Shared.Rent(panels * k * panelWidth);
        var edgeC = stackalloc T[TileRows * 64];
        var zeroRow = stackalloc T[k <= 256 ? k : 0];
        T[]? zeroRowHeap = k > 256 ? new T[k] : null;
        try
        {
            fixed (T* pc = c, pa = a, pb = b, pp = packed, pz = zeroRowHeap)
            {
                T* zeros = pz != null ? pz : zeroRow;
                new Span<T>(zeros, k).Clear();
                // Pack B [k, n] into panels [panel][k][panelWidth], zero-padded on the right.
                for (int p = 0; p < panels; p++)
                {
                    int col0 = p * panelWidth, width = Math.Min(panelWidth, n - col0);
                    T* dst = pp + (long)p * k * panelWidth;
                    for (int kk = 0; kk < k; kk++, dst += panelWidth)
                    {
                        new ReadOnlySpan<T>(pb + (long)kk * ldb + col0, width).CopyTo(new Span<T>(dst, width));
                        if (width < panelWidth) new Span<T>(dst + width, panelWidth - width).Clear();
                    }
                }
                for (int p = 0; p < panels; p++)
                {
                    int col0 = p * panelWidth, width = Math.Min(panelWidth, n - col0);
                    T* panel = pp + (long)p * k * panelWidth;
                    for (int r0 = 0; r0 < m; r0 += TileRows)
                    {
                        int rows = Math.Min(TileRows, m - r0);
                        T* a0 = pa + (long)r0 * lda;
                        T* a1 = rows > 1 ? a0 + lda : zeros;
                        T* a2 = rows > 2 ? a0 + 2L * lda : zeros;
                        T* a3 = rows > 3 ? a0 + 3L * lda : zeros;
                        T* ct = pc + (long)r0 * ldc + col0;
                        if (rows == TileRows && width == panelWidth)
                        {
                            Tile(ct, ldc, a0, a1, a2, a3, panel, k);
                            continue;
                        }
                        // Edge tile: run the same kernel on a copy of the valid part of C.
                        new Span<T>(edgeC, TileRows * panelWidth).Clear();
                        for (int r = 0; r < rows; r++)
                            new ReadOnlySpan<T>(ct + (long)r * ldc, width).CopyTo(new Span<T>(edgeC + r * panelWidth, width));
                        Tile(edgeC, panelWidth, a0, a1, a2, a3, panel, k);
                        for (int r = 0; r < rows; r++)
                            new ReadOnlySpan<T>(edgeC + r * panelWidth, width).CopyTo(new Span<T>(ct + (long)r * ldc, width));
                    }
                }
            }
        }
        finally
        {
            ArrayPool<T>.Shared.Return(packed);
        }
    }

    /// <summary>C[0..4, 0..4·lanes) += Σ_k a_r[k] · panel[k, :], the register-blocked inner loop.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void Tile<T>(T* c, int ldc, T* a0, T* a1, T* a2, T* a3, T* panel, int k) where T : unmanaged, INumberBase<T>
    {
        int lanes = Vector512<T>.Count;
        T* c1 = c + ldc, c2 = c1 + ldc, c3 = c2 + ldc;
        Vector512<T> c00 = Vector512.Load(c), c01 = Vector512.Load(c + lanes), c02 = Vector512.Load(c + 2 * lanes), c03 = Vector512.Load(c + 3 * lanes);
        Vector512<T> c10 = Vector512.Load(c1), c11 = Vector512.Load(c1 + lanes), c12 = Vector512.Load(c1 + 2 * lanes), c13 = Vector512.Load(c1 + 3 * lanes);
        Vector512<T> c20 = Vector512.Load(c2), c21 = Vector512.Load(c2 + lanes), c22 = Vector512.Load(c2 + 2 * lanes), c23 = Vector512.Load(c2 + 3 * lanes);
        Vector512<T> c30 = Vector512.Load(c3), c31 = Vector512.Load(c3 + lanes), c32 = Vector512.Load(c3 + 2 * lanes), c33 = Vector512.Load(c3 + 3 * lanes);
        T* b = panel;
        for (int kk = 0; kk < k; kk++, b += 4 * lanes)
        {
            Vector512<T> b0 = Vector512.Load(b), b1 = Vector512.Load(b + lanes), b2 = Vector512.Load(b + 2 * lanes), b3 = Vector512.Load(b + 3 * lanes);
            Vector512<T> x = Vector512.Create(a0[kk]);
            c00 = Fma(x, b0, c00); c01 = Fma(x, b1, c01); c02 = Fma(x, b2, c02); c03 = Fma(x, b3, c03);
            x = Vector512.Create(a1[kk]);
            c10 = Fma(x, b0, c10); c11 = Fma(x, b1, c11); c12 = Fma(x, b2, c12); c13 = Fma(x, b3, c13);
            x = Vector512.Create(a2[kk]);
            c20 = Fma(x, b0, c20); c21 = Fma(x, b1, c21); c22 = Fma(x, b2, c22); c23 = Fma(x, b3, c23);
            x = Vector512.Create(a3[kk]);
            c30 = Fma(x, b0, c30); c31 = Fma(x, b1, c31); c32 = Fma(x, b2, c32); c33 = Fma(x, b3, c33);
        }
        c00.Store(c); c01.Store(c + lanes); c02.Store(c + 2 * lanes); c03.Store(c + 3 * lanes);
        c10.Store(c1); c11.Store(c1 + lanes); c12.Store(c1 + 2 * lanes); c13.Store(c1 + 3 * lanes);
        c20.Store(c2); c21.Store(c2 + lanes); c22.Store(c2 + 2 * lanes); c23.Store(c2 + 3 * lanes);
        c30.Store(c3); c31.Store(c3 + lanes); c32.Store(c3 + 2 * lanes); c33.Store(c3 + 3 * lanes);
    }

    /// <summary>a·b + c as one fused instruction; the type test is resolved when the JIT specializes T.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> Fma<T>(Vector512<T> a, Vector512<T> b, Vector512<T> c) where T : unmanaged, INumberBase<T>
    {
        if (typeof(T) == typeof(float))
            return Vector512.FusedMultiplyAdd(a.AsSingle(), b.AsSingle(), c.AsSingle()).As<float, T>();
        if (typeof(T) == typeof(double))
            return Vector512.FusedMultiplyAdd(a.AsDouble(), b.AsDouble(), c.AsDouble()).As<double, T>();
        return a * b + c;
    }
}
