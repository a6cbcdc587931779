using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LlmShrink.Kernels;

/// <summary>
/// y[n, out] = x[n, in] · W[out, in]ᵀ — every linear layer. W is read in place (it may point into a memory-mapped
/// checkpoint) and both operands are walked along the contiguous <c>in</c> axis, so the inner loop is a set of dot
/// products: 4 rows of x against 4 rows of W at once keeps 16 Vector512 accumulators in registers and needs only
/// 8 loads per 16 FMAs.
/// <para>n == 1 (decode) is bound by memory bandwidth: W is streamed once, split by rows across threads.</para>
/// <para>n &gt; 1 (prompt) is bound by arithmetic: each thread owns a range of W rows, takes it in panels of
/// <see cref="PanelRows"/> rows and walks the <c>in</c> axis in slices of <see cref="SliceK"/>, so the panel's slice
/// and a block of <see cref="BlockRows"/> x rows stay in L2 and each 4-row W slice stays in L1 while it meets every x
/// row of the block (GotoBLAS-style blocking, without packing).</para>
/// </summary>
public static unsafe class MatMul
{
    /// <summary>W rows per parallel work item.</summary>
    private const int ItemRows = 16;
    /// <summary>W rows per panel: 128 rows × <see cref="SliceK"/> floats = 512 KB that stay in L2 while every block of x passes them.</summary>
    private const int PanelRows = 128;
    /// <summary>Length of an <c>in</c> slice: 4 W rows × 1024 floats = 16 KB, half of L1.</summary>
    internal const int SliceK = 1024;
    /// <summary>x rows per block: 64 rows × 4 KB slice = 256 KB, beside the W panel in a 1 MB L2 (Zen 4).</summary>
    private const int BlockRows = 64;

    [ThreadStatic] private static Job? t_job;

    public static void Multiply(ReadOnlySpan<float> x, float* w, Span<float> y, int n, int inDim, int outDim,
        WorkerPool? pool = null, int threads = 0)
    {
        if (n < 0 || inDim <= 0 || outDim <= 0) throw new ArgumentOutOfRangeException(nameof(n), "matrix dimensions must be positive");
        MatMulShapes.Check(x.Length, y.Length, n, inDim, outDim);
        if (n == 0) return;
        fixed (float* px = x, py = y)
        {
            var job = t_job ??= new Job();
            job.X = n > 1 ? AlignedRows.Of(px, (long)n * inDim) : px; job.W = w; job.Y = py; job.N = n; job.In = inDim; job.Out = outDim;
            (pool ?? WorkerPool.Shared).For((outDim + ItemRows - 1) / ItemRows, job, threads);
            job.X = job.W = job.Y = null;
        }
    }

    private sealed class Job : IParallelWork
    {
        public float* X, W, Y;
        public int N, In, Out;

        public void Execute(int begin, int end, int worker)
        {
            int j0 = begin * ItemRows, j1 = Math.Min(end * ItemRows, Out);
            for (int i = 0; i < N; i++) new Span<float>(Y + (long)i * Out + j0, j1 - j0).Clear();
            if (N == 1) Gemv(X, W, Y, In, j0, j1);
            else Gemm(X, W, Y, N, In, Out, j0, j1);
        }
    }

    /// <summary>One x row against W rows [j0, j1): stream each W row exactly once.</summary>
    private static void Gemv(float* x, float* w, float* y, int inDim, int j0, int j1)
    {
        int j = j0;
        for (; j + 4 <= j1; j += 4) Dot1x4(x, w + (long)j * inDim, inDim, inDim, y + j);
        for (; j < j1; j++) y[j] += Dot(x, w + (long)j * inDim, inDim);
    }

    /// <summary>
    /// W rows [j0, j1) panel by panel: a worker's rows can be thousands (its share of 8192), and walked whole, every
    /// block of x re-read the whole share from L3; a panel stays in L2, and x passes once per panel. 512-token prompt,
    /// 2048 → 8192 and 8192 → 2048 on one Zen 4 core: 33–37 → 44–48 G multiply-adds per second, 77–84 % of the FMA
    /// peak (with 1024-float slices; 512-float slices re-summed the 4×4 tile twice as often).
    /// </summary>
    private static void Gemm(float* x, float* w, float* y, int n, int inDim, int outDim, int j0, int j1)
    {
        for (int p0 = j0; p0 < j1; p0 += PanelRows)
            for (int k0 = 0; k0 < inDim; k0 += SliceK)
                AddProducts(x + k0, inDim, w + (long)p0 * inDim + k0, inDim, y + p0, outDim, n, Math.Min(PanelRows, j1 - p0), Math.Min(SliceK, inDim - k0));
    }

    /// <summary>
    /// y[i, j] += x_i · w_j over <paramref name="len"/> elements, for i in [0, n) and j in [0, rows): the register-blocked
    /// core of the prompt path, shared with the packed kernels, which dequantize a tile of W into a buffer and call this
    /// on it. Blocks of <see cref="BlockRows"/> x rows stay in L2 while each 4-row W slice (in L1) meets all of them;
    /// <paramref name="len"/> should be at most <see cref="SliceK"/>.
    /// </summary>
    internal static void AddProducts(float* x, int xStride, float* w, int wStride, float* y, int yStride, int n, int rows, int len)
    {
        for (int i0 = 0; i0 < n; i0 += BlockRows)
        {
            int i1 = Math.Min(i0 + BlockRows, n);
            int j = 0;
            for (; j + 4 <= rows; j += 4)
            {
                float* wj = w + (long)j * wStride;
                int i = i0;
                for (; i + 4 <= i1; i += 4) Dot4x4(x + (long)i * xStride, xStride, wj, wStride, len, y + (long)i * yStride + j, yStride);
                for (; i < i1; i++) Dot1x4(x + (long)i * xStride, wj, wStride, len, y + (long)i * yStride + j);
            }
            for (; j < rows; j++)
                for (int i = i0; i < i1; i++)
                    y[(long)i * yStride + j] += Dot(x + (long)i * xStride, w + (long)j * wStride, len);
        }
    }

    /// <summary>y[r, c] += x_r · w_c for 4 rows of x and 4 rows of W over <paramref name="len"/> elements.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot4x4(float* x, int xStride, float* w, int wStride, int len, float* y, int yStride)
    {
        float* x0 = x, x1 = x + xStride, x2 = x + 2 * xStride, x3 = x + 3 * xStride;
        float* w0 = w, w1 = w + wStride, w2 = w + 2 * wStride, w3 = w + 3 * wStride;
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default;
        Vector512<float> c10 = default, c11 = default, c12 = default, c13 = default;
        Vector512<float> c20 = default, c21 = default, c22 = default, c23 = default;
        Vector512<float> c30 = default, c31 = default, c32 = default, c33 = default;
        int k = 0;
        for (; k <= len - 16; k += 16)
        {
            // The four x vectors first, then each W vector feeds its four FMAs straight away: 7 % faster than loading
            // the four W vectors first, on Zen 4 (the same order gained 10 % in Int8MatMul).
            var a0 = Vector512.Load(x0 + k); var a1 = Vector512.Load(x1 + k); var a2 = Vector512.Load(x2 + k); var a3 = Vector512.Load(x3 + k);
            var b = Vector512.Load(w0 + k);
            c00 = Vector512.FusedMultiplyAdd(a0, b, c00); c10 = Vector512.FusedMultiplyAdd(a1, b, c10); c20 = Vector512.FusedMultiplyAdd(a2, b, c20); c30 = Vector512.FusedMultiplyAdd(a3, b, c30);
            b = Vector512.Load(w1 + k);
            c01 = Vector512.FusedMultiplyAdd(a0, b, c01); c11 = Vector512.FusedMultiplyAdd(a1, b, c11); c21 = Vector512.FusedMultiplyAdd(a2, b, c21); c31 = Vector512.FusedMultiplyAdd(a3, b, c31);
            b = Vector512.Load(w2 + k);
            c02 = Vector512.FusedMultiplyAdd(a0, b, c02); c12 = Vector512.FusedMultiplyAdd(a1, b, c12); c22 = Vector512.FusedMultiplyAdd(a2, b, c22); c32 = Vector512.FusedMultiplyAdd(a3, b, c32);
            b = Vector512.Load(w3 + k);
            c03 = Vector512.FusedMultiplyAdd(a0, b, c03); c13 = Vector512.FusedMultiplyAdd(a1, b, c13); c23 = Vector512.FusedMultiplyAdd(a2, b, c23); c33 = Vector512.FusedMultiplyAdd(a3, b, c33);
        }
        AddTo(y, Sum4(c00, c01, c02, c03));
        AddTo(y + yStride, Sum4(c10, c11, c12, c13));
        AddTo(y + 2 * yStride, Sum4(c20, c21, c22, c23));
        AddTo(y + 3 * yStride, Sum4(c30, c31, c32, c33));
        if (k < len) AddRaggedEnd(x, xStride, w, wStride, k, len, y, yStride, 4);
    }

    /// <summary>y[c] += x · w_c for one row of x and 4 rows of W; two accumulators per row hide FMA latency.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot1x4(float* x, float* w, int wStride, int len, float* y)
    {
        float* w0 = w, w1 = w + wStride, w2 = w + 2 * wStride, w3 = w + 3 * wStride;
        Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default;
        Vector512<float> d0 = default, d1 = default, d2 = default, d3 = default;
        int k = 0;
        for (; k <= len - 32; k += 32)
        {
            var a = Vector512.Load(x + k);
            var e = Vector512.Load(x + k + 16);
            c0 = Vector512.FusedMultiplyAdd(a, Vector512.Load(w0 + k), c0);
            c1 = Vector512.FusedMultiplyAdd(a, Vector512.Load(w1 + k), c1);
            c2 = Vector512.FusedMultiplyAdd(a, Vector512.Load(w2 + k), c2);
            c3 = Vector512.FusedMultiplyAdd(a, Vector512.Load(w3 + k), c3);
            d0 = Vector512.FusedMultiplyAdd(e, Vector512.Load(w0 + k + 16), d0);
            d1 = Vector512.FusedMultiplyAdd(e, Vector512.Load(w1 + k + 16), d1);
            d2 = Vector512.FusedMultiplyAdd(e, Vector512.Load(w2 + k + 16), d2);
            d3 = Vector512.FusedMultiplyAdd(e, Vector512.Load(w3 + k + 16), d3);
        }
        for (; k <= len - 16; k += 16)
        {
            var a = Vector512.Load(x + k);
            c0 = Vector512.FusedMultiplyAdd(a, Vector512.Load(w0 + k), c0);
            c1 = Vector512.FusedMultiplyAdd(a, Vector512.Load(w1 + k), c1);
            c2 = Vector512.FusedMultiplyAdd(a, Vector512.Load(w2 + k), c2);
            c3 = Vector512.FusedMultiplyAdd(a, Vector512.Load(w3 + k), c3);
        }
        AddTo(y, Sum4(c0 + d0, c1 + d1, c2 + d2, c3 + d3));
        if (k < len) AddRaggedEnd(x, 0, w, wStride, k, len, y, 0, 1);
    }

    private static float Dot(float* a, float* b, int len) =>
        System.Numerics.Tensors.TensorPrimitives.Dot(new ReadOnlySpan<float>(a, len), new ReadOnlySpan<float>(b, len));

    /// <summary>
    /// Elements [k, len) of the dot products of <paramref name="rows"/> x rows with 4 W rows, for widths that are not a
    /// multiple of 16. A separate method so that no call sits in the micro-kernels: a call would force the JIT to keep
    /// every accumulator on the stack (no zmm register survives a call).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void AddRaggedEnd(float* x, int xStride, float* w, int wStride, int k, int len, float* y, int yStride, int rows)
    {
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < 4; c++)
            {
                float sum = 0;
                for (int i = k; i < len; i++) sum += x[r * xStride + i] * w[c * wStride + i];
                y[r * yStride + c] += sum;
            }
    }

    /// <summary>The four horizontal sums {Σa, Σb, Σc, Σd}: fold each vector to 128 bits, then two rounds of pairwise adds.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> Sum4(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d)
    {
        Vector128<float> a1 = Fold(a), b1 = Fold(b), c1 = Fold(c), d1 = Fold(d);
        if (Sse3.IsSupported) return Sse3.HorizontalAdd(Sse3.HorizontalAdd(a1, b1), Sse3.HorizontalAdd(c1, d1));
        return Vector128.Create(Vector128.Sum(a1), Vector128.Sum(b1), Vector128.Sum(c1), Vector128.Sum(d1));

        static Vector128<float> Fold(Vector512<float> v)
        {
            var h = v.GetLower() + v.GetUpper();
            return h.GetLower() + h.GetUpper();
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddTo(float* y, Vector128<float> sums) => (Vector128.Load(y) + sums).Store(y);

    /// <summary>The plain definition, accumulated in double: what the fast paths are tested against.</summary>
    public static void Reference(ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<float> y, int n, int inDim, int outDim)
    {
        for (int i = 0; i < n; i++)
            for (int j = 0; j < outDim; j++)
            {
                double sum = 0;
                for (int k = 0; k < inDim; k++) sum += (double)x[i * inDim + k] * w[j * inDim + k];
                y[i * outDim + j] = (float)sum;
            }
    }
}
