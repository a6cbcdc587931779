using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LlmShrink.Kernels;

/// <summary>
/// y[n, out] = x[n, in]·W[out, in]ᵀ in integers: int8 × int8 → exact int32 (the core of W8A8, arXiv:2211.10438).
/// <para>
/// Both operands are signed, and <c>vpmaddubsw</c> needs one unsigned operand (moving the sign across costs an extra
/// op per product vector, AVX-512 has no <c>vpsignb</c>, and its int16 results still need <c>vpmaddwd</c> to widen),
/// so the products are formed in int16: x is widened once per call, each W vector is sign-extended as it is loaded
/// (<c>vpmovsxbw</c>), and <c>vpmaddwd</c> multiplies 32 pairs and sums adjacent ones into 16 int32 lanes — exact,
/// since |product| ≤ 2^14. Blocking follows <see cref="MatMul"/>: a 4×4 tile of dot products in 16 registers, W rows
/// split across threads and taken in panels, the <c>in</c> axis walked in slices so the panel's slice and a block of x
/// rows stay in L2 and each 4-row W slice in L1.
/// </para>
/// <para>Measured on Zen 4: a register-only loop of <c>vpmaddwd</c> + <c>vpaddd</c> pairs sustains 2.85 G pairs per
/// second and core (91 G int8 MACs, against 57 G for float FMAs: without the AVX512-VNNI instructions, which .NET 10
/// does not expose, int8 can be at most 1.6× float32 here), and this 4×4 tile reaches 2.8 of them on data in L1/L2
/// (83 G MACs per core in a whole 512×2048×8192 product). A 6×4 tile, pre-widened W slices, and 4×5 or 4×6 tiles
/// measured no faster, so the simplest stays.</para>
/// Sums overflow int32 only past 2^17 inputs (|x·w| ≤ 2^14), far above any layer width.
/// </summary>
public static unsafe class Int8MatMul
{
    private const int ItemRows = 16;
    /// <summary>W rows per panel (as <see cref="MatMul"/>): 128 rows × 2048 bytes = 256 KB in L2, beside a block of x.</summary>
    private const int PanelRows = 128;
    /// <summary>Slice of the <c>in</c> axis: 4 W rows × 2048 bytes = 8 KB in L1; x slices are 4 KB per row.</summary>
    private const int SliceK = 2048;
    /// <summary>x rows per block: 72 rows × 4 KB = 288 KB of L2.</summary>
    private const int BlockRows = 72;

    [ThreadStatic] private static short[]? t_wide;
    [ThreadStatic] private static Job? t_job;

    public static void Multiply(ReadOnlySpan<sbyte> x, sbyte* w, Span<int> y, int n, int inDim, int outDim, WorkerPool? pool = null, int threads = 0)
    {
        if (n < 0 || inDim <= 0 || outDim <= 0) throw new ArgumentOutOfRangeException(nameof(n), "matrix dimensions must be positive");
        if (x.Length < (long)n * inDim) throw new ArgumentException($"x has {x.Length} values, needs {n}×{inDim}", nameof(x));
        if (y.Length < (long)n * outDim) throw new ArgumentException($"y has {y.Length} values, needs {n}×{outDim}", nameof(y));
        if (n == 0) return;
        int elements = n * inDim;
        if (t_wide is null || t_wide.Length < elements) t_wide = GC.AllocateUninitializedArray<short>(elements, pinned: true);
        fixed (sbyte* px8 = x)
        fixed (short* px = t_wide)
        fixed (int* py = y)
        {
            Widen(px8, px, elements);
            var job = t_job ??= new Job();
            job.X = px; job.W = w; job.Y = py; job.N = n; job.In = inDim; job.Out = outDim;
            job.Vectorized = Avx512BW.IsSupported;
            (pool ?? WorkerPool.Shared).For((outDim + ItemRows - 1) / ItemRows, job, threads);
            job.X = null; job.W = null; job.Y = null;
        }
    }

    /// <summary>to[k] = from[k] sign-extended to int16.</summary>
    private static void Widen(sbyte* from, short* to, int count)
    {
        int k = 0;
        if (Avx512BW.IsSupported)
            for (; k <= count - 32; k += 32) WidenLoad(from + k).Store(to + k);
        for (; k < count; k++) to[k] = from[k];
    }

    private sealed class Job : IParallelWork
    {
        public short* X;
        public sbyte* W;
        public int* Y;
        public int N, In, Out;
        public bool Vectorized;

        public void Execute(int begin, int end, int worker)
        {
            int j0 = begin * ItemRows, j1 = Math.Min(end * ItemRows, Out);
            for (int i = 0; i < N; i++) new Span<int>(Y + (long)i * Out + j0, j1 - j0).Clear();
            for (int p0 = j0; p0 < j1; p0 += PanelRows) // see MatMul.Gemm
                for (int k0 = 0; k0 < In; k0 += SliceK)
                    AddProducts(p0, Math.Min(p0 + PanelRows, j1), k0, Math.Min(SliceK, In - k0));
        }

        /// <summary>y[i, j] += x_i · w_j over inputs [k0, k0 + len), for every x row and W rows [j0, j1).</summary>
        private void AddProducts(int j0, int j1, int k0, int len)
        {
            for (int i0 = 0; i0 < N; i0 += BlockRows)
            {
                int i1 = Math.Min(i0 + BlockRows, N);
                int j = j0;
                for (; Vectorized && j + 4 <= j1; j += 4)
                {
                    sbyte* wj = W + (long)j * In + k0;
                    int i = i0;
                    for (; i + 4 <= i1; i += 4) Dot4x4(X + (long)i * In + k0, In, wj, In, len, Y + (long)i * Out + j, Out);
                    for (; i < i1; i++) Dot1x4(X + (long)i * In + k0, wj, In, len, Y + (long)i * Out + j);
                }
                for (; j < j1; j++)
                    for (int i = i0; i < i1; i++)
                        Y[(long)i * Out + j] += Dot(X + (long)i * In + k0, W + (long)j * In + k0, 0, len);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot4x4(short* x, int xStride, sbyte* w, int wStride, int len, int* y, int yStride)
    {
        short* x0 = x, x1 = x + xStride, x2 = x + 2 * xStride, x3 = x + 3 * xStride;
        sbyte* w0 = w, w1 = w + wStride, w2 = w + 2 * wStride, w3 = w + 3 * wStride;
        Vector512<int> c00 = default, c01 = default, c02 = default, c03 = default;
        Vector512<int> c10 = default, c11 = default, c12 = default, c13 = default;
        Vector512<int> c20 = default, c21 = default, c22 = default, c23 = default;
        Vector512<int> c30 = default, c31 = default, c32 = default, c33 = default;
        int k = 0;
        for (; k <= len - 32; k += 32)
        {
            // x first, then one W row at a time: each widened W vector feeds its four products straight away. The
            // other order (four W vectors, then one x row at a time) ran 10 % slower on Zen 4 (2.6 against 2.85 G
            // products per second and core, the latter at the speed of a loop of register-only vpmaddwd + vpaddd).
            var a0 = Vector512.Load(x0 + k); var a1 = Vector512.Load(x1 + k); var a2 = Vector512.Load(x2 + k); var a3 = Vector512.Load(x3 + k);
            var b = WidenLoad(w0 + k);
            c00 = MulAdd(a0, b, c00); c10 = MulAdd(a1, b, c10); c20 = MulAdd(a2, b, c20); c30 = MulAdd(a3, b, c30);
            b = WidenLoad(w1 + k);
            c01 = MulAdd(a0, b, c01); c11 = MulAdd(a1, b, c11); c21 = MulAdd(a2, b, c21); c31 = MulAdd(a3, b, c31);
            b = WidenLoad(w2 + k);
            c02 = MulAdd(a0, b, c02); c12 = MulAdd(a1, b, c12); c22 = MulAdd(a2, b, c22); c32 = MulAdd(a3, b, c32);
            b = WidenLoad(w3 + k);
            c03 = MulAdd(a0, b, c03); c13 = MulAdd(a1, b, c13); c23 = MulAdd(a2, b, c23); c33 = MulAdd(a3, b, c33);
        }
        AddTo(y, Sum4(c00, c01, c02, c03));
        AddTo(y + yStride, Sum4(c10, c11, c12, c13));
        AddTo(y + 2 * yStride, Sum4(c20, c21, c22, c23));
        AddTo(y + 3 * yStride, Sum4(c30, c31, c32, c33));
        if (k < len) AddRaggedEnd(x, xStride, w, wStride, k, len, y, yStride, 4);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<short> WidenLoad(sbyte* p) => Avx512BW.ConvertToVector512Int16(Vector256.Load(p));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> MulAdd(Vector512<short> a, Vector512<short> b, Vector512<int> acc) => acc + Avx512BW.MultiplyAddAdjacent(a, b);

    /// <summary>y[c] += x · w_c for one row of x and 4 W rows: decode, and the rows a block has left over.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot1x4(short* x, sbyte* w, int wStride, int len, int* y)
    {
        sbyte* w0 = w, w1 = w + wStride, w2 = w + 2 * wStride, w3 = w + 3 * wStride;
        Vector512<int> c0 = default, c1 = default, c2 = default, c3 = default;
        int k = 0;
        for (; k <= len - 32; k += 32)
        {
            var a = Vector512.Load(x + k);
            c0 = MulAdd(a, WidenLoad(w0 + k), c0); c1 = MulAdd(a, WidenLoad(w1 + k), c1);
            c2 = MulAdd(a, WidenLoad(w2 + k), c2); c3 = MulAdd(a, WidenLoad(w3 + k), c3);
        }
        AddTo(y, Sum4(c0, c1, c2, c3));
        if (k < len) AddRaggedEnd(x, 0, w, wStride, k, len, y, 0, 1);
    }

    /// <summary>The four horizontal sums {Σa, Σb, Σc, Σd}: fold each vector to 128 bits, then two rounds of pairwise adds.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<int> Sum4(Vector512<int> a, Vector512<int> b, Vector512<int> c, Vector512<int> d)
    {
        return Ssse3.HorizontalAdd(Ssse3.HorizontalAdd(Fold(a), Fold(b)), Ssse3.HorizontalAdd(Fold(c), Fold(d)));

        static Vector128<int> Fold(Vector512<int> v)
        {
            var h = v.GetLower() + v.GetUpper();
            return h.GetLower() + h.GetUpper();
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddTo(int* y, Vector128<int> sums) => (Vector128.Load(y) + sums).Store(y);


    /// <summary>Inputs [k, len) for widths that are not a multiple of 32, kept out of line so the micro-kernels hold their registers.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void AddRaggedEnd(short* x, int xStride, sbyte* w, int wStride, int k, int len, int* y, int yStride, int rows)
    {
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < 4; c++) y[r * yStride + c] += Dot(x + r * xStride, w + c * wStride, k, len);
    }

    private static int Dot(short* x, sbyte* w, int k, int len)
    {
        int sum = 0;
        for (; k < len; k++) sum += x[k] * w[k];
        return sum;
    }

    /// <summary>The plain definition.</summary>
    public static void Reference(ReadOnlySpan<sbyte> x, ReadOnlySpan<sbyte> w, Span<int> y, int n, int inDim, int outDim)
    {
        for (int i = 0; i < n; i++)
            for (int j = 0; j < outDim; j++)
            {
                int sum = 0;
                for (int k = 0; k < inDim; k++) sum += x[i * inDim + k] * w[j * inDim + k];
                y[i * outDim + j] = sum;
            }
    }
}
