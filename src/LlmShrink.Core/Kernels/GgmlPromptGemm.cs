using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using LlmShrink.Formats;

namespace LlmShrink.Kernels;

/// <summary>
/// The prompt (n &gt; 1) path of Q4_0 and Q8_0 on int8 activations, as decode and as llama.cpp's prompt: a worker takes
/// 8 W rows at a time and re-lays their codes once so that 32-bit lane j of a vector holds 4 consecutive codes of row j
/// (an 8×8 transpose of 4-byte groups per block), the interleaving llama.cpp's repacked Q4_0 gets by copying the
/// model at load. Then one <c>vpdpbusd</c> against 4 activation bytes broadcast to every lane advances all 8 rows, a
/// block's 8 of them leave each lane with that row's whole block dot, and the block scales apply as one vector
/// (d_w of the 8 rows × d_x) with no horizontal sums. The re-laid rows (8 bytes per input) stay in L1/L2 while every
/// activation row meets them, so their cost is O(out·in) against O(n·out·in) multiply-adds. Two such sets (16 rows)
/// share each activation broadcast (<see cref="Rows4x16"/>).
/// <para>Against the float tiles it replaces (<see cref="TiledGemm"/>): <c>vpdpbusd</c> on 256 bits does 32
/// multiply-adds where a 512-bit float FMA does 16 (.NET 10 exposes only the 256-bit AVX-VNNI form on this CPU, no
/// <c>Avx512Vnni</c>). Measured on the Llama-3.2-1B shape, 2 threads, 64-token prompt: Q4_0 112 → 145–183 tok/s,
/// Q8_0 105 → 140–181 (docs/BENCHMARKS.md, issue 15).</para>
/// </summary>
public static unsafe partial class GgmlMatMul
{
    /// <summary>Whether prompts of <paramref name="type"/> run on int8 activations (<see cref="MultiplyPrompt"/>, <see cref="MultiplyKQuantPrompt"/>).</summary>
    public static bool HasIntegerPrompt(TensorType type) =>
        AvxVnni.IsSupported && type is TensorType.Q4_0 or TensorType.Q8_0 or TensorType.Q4_K or TensorType.Q5_K or TensorType.Q6_K;

    [ThreadStatic] private static byte[]? t_interleaved;
    [ThreadStatic] private static float[]? t_rowScales;
    [ThreadStatic] private static PromptJob? t_promptJob;

    /// <summary>
    /// y = x·Wᵀ for n quantized activation rows (<paramref name="q"/>, one scale per 32, Σq per 32); <paramref name="offsets"/>
    /// are the decode kernels' lane starts, for the last W rows that do not fill a group of 8.
    /// </summary>
    private static void MultiplyPrompt(TensorType type, byte* w, sbyte* q, float* scales, int* sums, int* offsets, float* y, int n, int inDim, int outDim,
        WorkerPool pool, int threads)
    {
        var job = t_promptJob ??= new PromptJob();
        job.Type = type; job.W = w; job.Q = q; job.Scales = scales; job.Sums = sums; job.Offsets = offsets; job.Y = y;
        job.N = n; job.In = inDim; job.Out = outDim; job.RowBytes = (int)TensorTypes.ByteCount(type, inDim);
        pool.For((outDim + ItemRows - 1) / ItemRows, job, threads);
        job.W = null; job.Q = null; job.Scales = null; job.Sums = null; job.Offsets = null; job.Y = null;
    }

    private sealed class PromptJob : IParallelWork
    {
        public TensorType Type;
        public byte* W;
        public sbyte* Q;
        public float* Scales, Y;
        public int* Sums, Offsets;
        public int N, In, Out, RowBytes;

        public void Execute(int begin, int end, int worker)
        {
            int blocks = In / 32, j0 = begin * ItemRows, j1 = Math.Min(end * ItemRows, Out);
            if (t_interleaved is null || t_interleaved.Length < 16 * In) t_interleaved = GC.AllocateUninitializedArray<byte>(16 * In, pinned: true);
            if (t_rowScales is null || t_rowScales.Length < 16 * blocks) t_rowScales = GC.AllocateUninitializedArray<float>(16 * blocks, pinned: true);
            // Σ(w + c)·x − c·Σx = Σ w·x: Q4_0's nibbles are w + 8, Q8_0's codes XOR 0x80 are w + 128.
            int offset = Type == TensorType.Q4_0 ? 8 : 128;
            fixed (byte* codes = t_interleaved)
            fixed (float* rowScales = t_rowScales)
            {
                int j = j0;
                // 16 rows per pass: two re-laid sets of 8 share each activation broadcast, one load for two vpdpbusd
                // (8 rows: one per vpdpbusd, the bound) — 1.2–1.25× the 8-row pass, Q4_0 and Q8_0, 64 and 512 rows of x.
                for (; j + 16 <= j1; j += 16)
                    {
                        Interleave(Type, W + (long)j * RowBytes, RowBytes, blocks, codes, rowScales);
                        Interleave(Type, W + (long)(j + 8) * RowBytes, RowBytes, blocks, codes + 8 * In, rowScales + 8 * blocks);
                        int i = 0;
                        for (; i + 4 <= N; i += 4) Rows4x16(codes, codes + 8 * In, rowScales, rowScales + 8 * blocks, Q + (long)i * In, Scales + (long)i * blocks, Sums + (long)i * blocks, offset, blocks, In, Y + (long)i * Out + j, Out);
                        for (; i < N; i++)
                        {
                            Row1(codes, rowScales, Q + (long)i * In, Scales + (long)i * blocks, Sums + (long)i * blocks, offset, blocks, Y + (long)i * Out + j);
                            Row1(codes + 8 * In, rowScales + 8 * blocks, Q + (long)i * In, Scales + (long)i * blocks, Sums + (long)i * blocks, offset, blocks, Y + (long)i * Out + j + 8);
                        }
                    }
                for (; j + 8 <= j1; j += 8)
                {
                    Interleave(Type, W + (long)j * RowBytes, RowBytes, blocks, codes, rowScales);
                    int i = 0;
                    for (; i + 4 <= N; i += 4) Rows4(codes, rowScales, Q + (long)i * In, Scales + (long)i * blocks, Sums + (long)i * blocks, offset, blocks, In, Y + (long)i * Out + j, Out);
                    for (; i < N; i++) Row1(codes, rowScales, Q + (long)i * In, Scales + (long)i * blocks, Sums + (long)i * blocks, offset, blocks, Y + (long)i * Out + j);
                }
                // Fewer than 8 rows left: the decode kernels, row by row (same integer arithmetic, lanes summed instead).
                for (; j < j1; j++)
                    for (int i = 0; i < N; i++)
                    {
                        byte* row = W + (long)j * RowBytes;
                        sbyte* qi = Q + (long)i * In;
                        float* si = Scales + (long)i * blocks;
                        int* oi = Offsets + (long)i * blocks;
                        Y[(long)i * Out + j] = Type == TensorType.Q4_0 ? DotQ4_0(row, qi, si, oi, blocks) : DotQ8_0Vnni(row, qi, si, oi, blocks);
                    }
            }
        }
    }

    /// <summary>A block's 32 codes as unsigned bytes w + c in element order (Q4_0: its nibbles; Q8_0: XOR 0x80).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> UnsignedCodes(TensorType type, byte* block) =>
        type == TensorType.Q4_0 ? Nibbles(block + 2) : Vector256.Load(block + 2) ^ Vector256.Create((byte)0x80);

    /// <summary>
    /// 8 rows' unsigned codes, block by block (<see cref="LaneInterleave"/>): vector g of block b (32 bytes at
    /// <paramref name="codes"/> + 32·(8b + g)) holds in lane j the codes 4g..4g+3 of row j; <paramref name="rowScales"/>[8b + j] is row j's d.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Interleave(TensorType type, byte* w, int rowBytes, int blocks, byte* codes, float* rowScales)
    {
        int blockBytes = type == TensorType.Q4_0 ? 18 : 34;
        for (int b = 0; b < blocks; b++, codes += 256, rowScales += 8)
        {
            byte* p = w + (long)b * blockBytes;
            for (int j = 0; j < 8; j++) rowScales[j] = Fp16(p + (long)j * rowBytes);
            LaneInterleave.Store(UnsignedCodes(type, p), UnsignedCodes(type, p + rowBytes), UnsignedCodes(type, p + 2L * rowBytes), UnsignedCodes(type, p + 3L * rowBytes),
                UnsignedCodes(type, p + 4L * rowBytes), UnsignedCodes(type, p + 5L * rowBytes), UnsignedCodes(type, p + 6L * rowBytes), UnsignedCodes(type, p + 7L * rowBytes), codes);
        }
    }

    /// <summary>
    /// y[r, 0..8) for 4 activation rows against the 8 interleaved W rows. Each row keeps two integer chains (even and odd
    /// groups) so that consecutive <c>vpdpbusd</c> do not wait on each other; each group's codes are loaded once for the 4.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Rows4(byte* codes, float* rowScales, sbyte* q, float* scales, int* sums, int offset, int blocks, int inDim, float* y, int yStride)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        for (int b = 0; b < blocks; b++, codes += 256)
        {
            int* x0 = (int*)(q + 32 * b);
            int* x1 = (int*)((sbyte*)x0 + inDim), x2 = (int*)((sbyte*)x1 + inDim), x3 = (int*)((sbyte*)x2 + inDim);
            Vector256<int> e0 = Vector256.Create(-offset * sums[b]), e1 = Vector256.Create(-offset * sums[b + blocks]);
            Vector256<int> e2 = Vector256.Create(-offset * sums[b + 2 * blocks]), e3 = Vector256.Create(-offset * sums[b + 3 * blocks]);
            Vector256<int> o0 = default, o1 = default, o2 = default, o3 = default;
            for (int g = 0; g < 8; g += 2)
            {
                var c = Vector256.Load(codes + 32 * g);
                e0 = AvxVnni.MultiplyWideningAndAdd(e0, c, Vector256.Create(x0[g]).AsSByte());
                e1 = AvxVnni.MultiplyWideningAndAdd(e1, c, Vector256.Create(x1[g]).AsSByte());
                e2 = AvxVnni.MultiplyWideningAndAdd(e2, c, Vector256.Create(x2[g]).AsSByte());
                e3 = AvxVnni.MultiplyWideningAndAdd(e3, c, Vector256.Create(x3[g]).AsSByte());
                c = Vector256.Load(codes + 32 * g + 32);
                o0 = AvxVnni.MultiplyWideningAndAdd(o0, c, Vector256.Create(x0[g + 1]).AsSByte());
                o1 = AvxVnni.MultiplyWideningAndAdd(o1, c, Vector256.Create(x1[g + 1]).AsSByte());
                o2 = AvxVnni.MultiplyWideningAndAdd(o2, c, Vector256.Create(x2[g + 1]).AsSByte());
                o3 = AvxVnni.MultiplyWideningAndAdd(o3, c, Vector256.Create(x3[g + 1]).AsSByte());
            }
            var dw = Vector256.Load(rowScales + 8 * b);
            a0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(e0 + o0), dw * Vector256.Create(scales[b]), a0);
            a1 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(e1 + o1), dw * Vector256.Create(scales[b + blocks]), a1);
            a2 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(e2 + o2), dw * Vector256.Create(scales[b + 2 * blocks]), a2);
            a3 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(e3 + o3), dw * Vector256.Create(scales[b + 3 * blocks]), a3);
        }
        a0.Store(y); a1.Store(y + yStride); a2.Store(y + 2 * yStride); a3.Store(y + 3 * yStride);
    }

    /// <summary>
    /// <see cref="Rows4"/> for 16 W rows, two interleaved sets of 8 (<paramref name="codesA"/>, <paramref name="codesB"/>):
    /// each broadcast of 4 activation bytes feeds a <c>vpdpbusd</c> of each set, so the 8 chains are independent enough
    /// without <see cref="Rows4"/>'s even/odd split.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Rows4x16(byte* codesA, byte* codesB, float* rowScalesA, float* rowScalesB, sbyte* q, float* scales, int* sums, int offset, int blocks, int inDim, float* y, int yStride)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, c0 = default, c1 = default, c2 = default, c3 = default;
        for (int b = 0; b < blocks; b++, codesA += 256, codesB += 256)
        {
            int* x0 = (int*)(q + 32 * b);
            int* x1 = (int*)((sbyte*)x0 + inDim), x2 = (int*)((sbyte*)x1 + inDim), x3 = (int*)((sbyte*)x2 + inDim);
            Vector256<int> e0 = Vector256.Create(-offset * sums[b]), e1 = Vector256.Create(-offset * sums[b + blocks]);
            Vector256<int> e2 = Vector256.Create(-offset * sums[b + 2 * blocks]), e3 = Vector256.Create(-offset * sums[b + 3 * blocks]);
            Vector256<int> f0 = e0, f1 = e1, f2 = e2, f3 = e3;
            for (int g = 0; g < 8; g++)
            {
                var ca = Vector256.Load(codesA + 32 * g);
                var cb = Vector256.Load(codesB + 32 * g);
                var v = Vector256.Create(x0[g]).AsSByte(); e0 = AvxVnni.MultiplyWideningAndAdd(e0, ca, v); f0 = AvxVnni.MultiplyWideningAndAdd(f0, cb, v);
                v = Vector256.Create(x1[g]).AsSByte(); e1 = AvxVnni.MultiplyWideningAndAdd(e1, ca, v); f1 = AvxVnni.MultiplyWideningAndAdd(f1, cb, v);
                v = Vector256.Create(x2[g]).AsSByte(); e2 = AvxVnni.MultiplyWideningAndAdd(e2, ca, v); f2 = AvxVnni.MultiplyWideningAndAdd(f2, cb, v);
                v = Vector256.Create(x3[g]).AsSByte(); e3 = AvxVnni.MultiplyWideningAndAdd(e3, ca, v); f3 = AvxVnni.MultiplyWideningAndAdd(f3, cb, v);
            }
            var dwa = Vector256.Load(rowScalesA + 8 * b);
            var dwb = Vector256.Load(rowScalesB + 8 * b);
            var s0 = Vector256.Create(scales[b]); var s1 = Vector256.Create(scales[b + blocks]);
            var s2 = Vector256.Create(scales[b + 2 * blocks]); var s3 = Vector256.Create(scales[b + 3 * blocks]);
            a0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(e0), dwa * s0, a0); c0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(f0), dwb * s0, c0);
            a1 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(e1), dwa * s1, a1); c1 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(f1), dwb * s1, c1);
            a2 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(e2), dwa * s2, a2); c2 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(f2), dwb * s2, c2);
            a3 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(e3), dwa * s3, a3); c3 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(f3), dwb * s3, c3);
        }
        a0.Store(y); c0.Store(y + 8); a1.Store(y + yStride); c1.Store(y + yStride + 8);
        a2.Store(y + 2 * yStride); c2.Store(y + 2 * yStride + 8); a3.Store(y + 3 * yStride); c3.Store(y + 3 * yStride + 8);
    }

    /// <summary>y[0..8) for one activation row (the last n mod 4) against the 8 interleaved W rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Row1(byte* codes, float* rowScales, sbyte* q, float* scales, int* sums, int offset, int blocks, float* y)
    {
        var acc = Vector256<float>.Zero;
        for (int b = 0; b < blocks; b++, codes += 256)
        {
            int* x = (int*)(q + 32 * b);
            Vector256<int> even = Vector256.Create(-offset * sums[b]), odd = default;
            for (int g = 0; g < 8; g += 2)
            {
                even = AvxVnni.MultiplyWideningAndAdd(even, Vector256.Load(codes + 32 * g), Vector256.Create(x[g]).AsSByte());
                odd = AvxVnni.MultiplyWideningAndAdd(odd, Vector256.Load(codes + 32 * g + 32), Vector256.Create(x[g + 1]).AsSByte());
            }
            acc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(even + odd), Vector256.Load(rowScales + 8 * b) * Vector256.Create(scales[b]), acc);
        }
        acc.Store(y);
    }
}
