using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LlmShrink.Kernels;

/// <summary>
/// y[n, out] = x[n, in]·Wᵀ with W in a 16-bit float format (<see cref="Bfloat16"/> or <see cref="Float16"/>), read in
/// place: half the bytes of float32, and never widened in memory. Widening is exact in both formats: 16 weights load as
/// 16 ushorts, zero-extend to 32-bit lanes (<c>vpmovzxwd</c>) and become float32 in registers. Decode (n = 1) streams W
/// once, a row at a time; a prompt (n &gt; 1) widens tiles into float32 and
/// runs the float micro-kernel (<see cref="TiledGemm"/>).
/// </summary>
public sealed unsafe class HalfWidthMatMul<TFormat> : IRowDecoder where TFormat : struct, IHalfWidthFormat
{
    private const int ItemRows = 16;

    public int InDim { get; }
    public int OutDim { get; }
    private readonly ushort* _w;

    /// <summary>Whether the AVX-512 kernels run (tests switch them off to check the portable path).</summary>
    internal bool Vectorized { get; set; } = Avx512F.IsSupported;

    [ThreadStatic] private static GemvJob? t_job;

    /// <param name="w">[outDim, inDim] 16-bit values; the memory must outlive this object.</param>
    public HalfWidthMatMul(ushort* w, int inDim, int outDim)
    {
        if (inDim <= 0 || outDim <= 0) throw new ArgumentException("dimensions must be positive");
        _w = w; InDim = inDim; OutDim = outDim;
    }

    public void Multiply(ReadOnlySpan<float> x, Span<float> y, int n, WorkerPool? pool = null, int threads = 0)
    {
        if (n < 0) throw new ArgumentOutOfRangeException(nameof(n));
        MatMulShapes.Check(x.Length, y.Length, n, InDim, OutDim);
        if (n == 0) return;
        pool ??= WorkerPool.Shared;
        fixed (float* px = x, py = y)
        {
            if (n > 1)
            {
                TiledGemm.Multiply(this, px, py, n, InDim, OutDim, pool, threads);
                return;
            }
            var job = t_job ??= new GemvJob();
            bool vectorized = Vectorized && InDim >= 16;
            var input = x[..InDim]; // x may be a longer buffer
            int dotScaleLog2 = vectorized ? ActivationScaleLog2(input) : 0;
            if (dotScaleLog2 != 0)
            {
                if (job.Scaled.Length < InDim) job.Scaled = new float[InDim];
                TensorPrimitives.Multiply(input, MathF.ScaleB(1, dotScaleLog2), job.Scaled.AsSpan(0, InDim));
            }
            fixed (float* scaled = job.Scaled)
            {
                job.Owner = this; job.Vectorized = vectorized; job.Y = py;
                job.X = dotScaleLog2 != 0 ? scaled : px;
                job.YScale = MathF.ScaleB(1, TFormat.DotScaleLog2 - dotScaleLog2);
                pool.For((OutDim + ItemRows - 1) / ItemRows, job, threads);
                job.Owner = null; job.X = job.Y = null;
            }
        }
    }

    /// <summary>
    /// The power of two decode multiplies x by, so that x times <see cref="IHalfWidthFormat.WidenForDot"/> is x times
    /// the weight: the format's own (2¹¹² for F16), lowered only as far as keeps the largest |x| finite — products and
    /// sums are then those of the unscaled kernel exactly (scaling by a power of two rounds nothing), and only
    /// activations beyond 2¹⁵ (none seen in a model's matrix inputs) pay the remainder as one multiply of y.
    /// </summary>
    private static int ActivationScaleLog2(ReadOnlySpan<float> x)
    {
        int log2 = TFormat.DotScaleLog2;
        if (log2 == 0) return 0;
        float largest = MathF.Abs(TensorPrimitives.MaxMagnitude(x)); // the element itself, sign included
        return largest > 0 && float.IsFinite(largest) ? Math.Min(log2, 127 - MathF.ILogB(largest)) : log2;
    }

    private sealed class GemvJob : IParallelWork
    {
        public HalfWidthMatMul<TFormat>? Owner;
        public bool Vectorized;
        /// <summary>x, carrying 2^(format's DotScaleLog2) / YScale when vectorized.</summary>
        public float* X, Y;
        public float YScale;
        public float[] Scaled = [];

        public void Execute(int begin, int end, int worker)
        {
            var m = Owner!;
            int j0 = begin * ItemRows, j1 = Math.Min(end * ItemRows, m.OutDim), j = j0;
            if (Vectorized)
            {
                for (; j < j1; j++) Y[j] = Dot1(X, m._w + (long)j * m.InDim, m.InDim);
                if (YScale != 1) for (int r = j0; r < j1; r++) Y[r] *= YScale;
            }
            for (; j < j1; j++) Y[j] = DotScalar(X, m._w + (long)j * m.InDim, m.InDim);
        }
    }

    /// <summary>Decode's widening: the weights over 2^DotScaleLog2, which x carries.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Widen(ushort* p) => TFormat.WidenForDot(p);

    /// <summary>
    /// x · w for one row (len ≥ 16), four accumulators to hide the FMA latency. One row at a time, not four: decode is
    /// bound by reading W, and one stream per thread reads it faster than four adjacent rows 2·len bytes apart —
    /// F16 8192×2048 from DRAM 1,500 → 900 µs at 1 and 2 threads, BF16 likewise (ggml-gemv, docs/BENCHMARKS.md).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Dot1(float* x, ushort* w, int len)
    {
        Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default;
        int k = 0;
        for (; k <= len - 64; k += 64)
        {
            c0 = Vector512.FusedMultiplyAdd(Vector512.Load(x + k), Widen(w + k), c0);
            c1 = Vector512.FusedMultiplyAdd(Vector512.Load(x + k + 16), Widen(w + k + 16), c1);
            c2 = Vector512.FusedMultiplyAdd(Vector512.Load(x + k + 32), Widen(w + k + 32), c2);
            c3 = Vector512.FusedMultiplyAdd(Vector512.Load(x + k + 48), Widen(w + k + 48), c3);
        }
        for (; k <= len - 16; k += 16) c0 = Vector512.FusedMultiplyAdd(Vector512.Load(x + k), Widen(w + k), c0);
        if (k < len)
        {
            // The last len mod 16 inputs: the 16 ending at len, with the lanes already summed left out (a low-rank factor's
            // rank, e.g. 983, is rarely a multiple of 16, and widening a scalar binary16 is ~10 instructions per value).
            int start = len - 16;
            var fresh = Vector512.GreaterThanOrEqual(Vector512<int>.Indices, Vector512.Create(k - start)).AsSingle();
            c1 = Vector512.ConditionalSelect(fresh, Vector512.FusedMultiplyAdd(Vector512.Load(x + start), Widen(w + start), c1), c1);
        }
        return Vector512.Sum((c0 + c1) + (c2 + c3));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Widen(ushort bits) => TFormat.Widen(bits);

    private static float DotScalar(float* x, ushort* w, int len)
    {
        float sum = 0;
        for (int k = 0; k < len; k++) sum += x[k] * Widen(w[k]);
        return sum;
    }

    public void DecodeRow(int row, int k0, int len, float* destination)
    {
        ushort* p = _w + (long)row * InDim + k0;
        int k = 0;
        if (Vectorized)
            for (; k <= len - 16; k += 16) TFormat.Widen(p + k).Store(destination + k);
        for (; k < len; k++) destination[k] = Widen(p[k]);
    }

    /// <summary>The plain definition, accumulated in double: what the fast paths are tested against.</summary>
    public static void Reference(ReadOnlySpan<float> x, ReadOnlySpan<ushort> w, Span<float> y, int n, int inDim, int outDim)
    {
        for (int i = 0; i < n; i++)
            for (int j = 0; j < outDim; j++)
            {
                double sum = 0;
                for (int k = 0; k < inDim; k++) sum += (double)x[i * inDim + k] * Widen(w[j * inDim + k]);
                y[i * outDim + j] = (float)sum;
            }
    }
}
