using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using LlmShrink.Formats;

namespace LlmShrink.Kernels;

/// <summary>
/// The prompt (n &gt; 1) path of Q4_K, Q5_K and Q6_K on int8 activations (one scale per 256, as decode), laid out as
/// Q4_0/Q8_0's (GgmlPromptGemm.cs): a worker re-lays 8 W rows once so that 32-bit lane j holds 4 consecutive codes of
/// row j (<see cref="LaneInterleave"/>), and one <c>vpdpbusd</c> against 4 broadcast activation bytes advances all 8
/// rows. The codes go in unsigned as stored (Q4_K 0..15, Q5_K 0..31, Q6_K 0..63); the sub-block scales multiply each
/// sub-block's int32 dot (<c>vpmulld</c> by a vector of the 8 rows' scales), so a super-block's integer sum is the
/// decode kernels' exactly, and the float scales d·d_x apply once per super-block.
/// <list type="bullet">
/// <item>Q4_K/Q5_K (8 sub-blocks of 32, w = d·sc·q − dmin·m): Σ w·x = d_x·(d·Σ_s sc_s·Σ q·q_x − dmin·Σ_s m_s·Σq_x).
/// The minimum term needs no codes: per sub-block one FMA of the 8 rows' −dmin·m_s with the activation's d_x·Σq_x.
/// Bound: a sub-block dot ≤ 32·31·127 = 125,984, times sc ≤ 63, 8 of them: 63.5·10⁶ &lt; 2³¹.</item>
/// <item>Q6_K (16 groups of 16, w = d·sc·(q − 32), sc signed): each group's chain starts from −32·Σ₁₆ q_x (computed
/// once per call), so it ends at Σ (q − 32)·q_x ∈ ±16·32·127 = ±65,024 (and passes no further than ±16·63·127 +
/// 65,024 on the way); times |sc| ≤ 128, 16 of them: 1.33·10⁸ &lt; 2³¹.</item>
/// </list>
/// Against the float tiles it replaces (<see cref="TiledGemm"/>): 32 multiply-adds per 256-bit <c>vpdpbusd</c>
/// against 16 per 512-bit FMA, at a cost of one <c>vpmulld</c> and one add per sub-block and activation row.
/// <para>16 W rows per pass (two groups sharing each broadcast: 6 loads per 8 <c>vpdpbusd</c> instead of 5 per 4)
/// measured 8–15 % slower on ggml-gemv --n 64 (1 thread): 8 chains plus 8 integer sums plus 8 float sums exceed ymm0–15, and with
/// the sums moved to memory the loads saved did not pay for the stores; so 8 rows. (Q4_0/Q8_0 and GPTQ, whose blocks
/// need no sub-block integer sums, do take 16: GgmlPromptGemm.cs.)</para>
/// </summary>
public static unsafe partial class GgmlMatMul
{
    private static bool IsKQuant(TensorType type) => type is TensorType.Q4_K or TensorType.Q5_K or TensorType.Q6_K;

    [ThreadStatic] private static byte[]? t_kCodes;
    [ThreadStatic] private static int[]? t_kSubScales;
    [ThreadStatic] private static float[]? t_kRowScales, t_kRowMinimums;
    [ThreadStatic] private static float[]? t_kActivationMinimums;
    [ThreadStatic] private static int[]? t_kGroupOffsets;
    [ThreadStatic] private static KQuantPromptJob? t_kPromptJob;

    /// <summary>
    /// y = x·Wᵀ for n quantized activation rows (<paramref name="q"/>, one scale per 256; <paramref name="sums"/>: Σq per
    /// 32, needed by Q4_K and Q5_K only).
    /// </summary>
    private static void MultiplyKQuantPrompt(TensorType type, byte* w, sbyte* q, float* scales, int* sums, float* y, int n, int inDim, int outDim,
        WorkerPool pool, int threads)
    {
        if (t_kActivationMinimums is null || t_kActivationMinimums.Length < n * inDim / 32) t_kActivationMinimums = GC.AllocateUninitializedArray<float>(n * inDim / 32, pinned: true);
        if (t_kGroupOffsets is null || t_kGroupOffsets.Length < n * inDim / 16) t_kGroupOffsets = GC.AllocateUninitializedArray<int>(n * inDim / 16, pinned: true);
        fixed (float* activationMinimums = t_kActivationMinimums)
        fixed (int* groupOffsets = t_kGroupOffsets)
        {
            if (type == TensorType.Q6_K)
            {
                // −32·Σq_x per 16: the start of each group's chain (see the class summary). One vpdpbusd against ones
                // sums 32 activations in fours, two horizontal adds make the sums of 16 (a scalar loop here, outside the
                // workers, cost 3–7 % of ggml-gemv --n 512 --in 8192 --out 2048 at 2 threads).
                var ones = Vector256.Create((byte)1);
                for (long g = 0; g < (long)n * inDim / 16; g += 2)
                {
                    var fours = AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, ones, Vector256.Load(q + 16 * g));
                    var eights = Avx2.HorizontalAdd(fours, fours);
                    var sixteens = Avx2.HorizontalAdd(eights, eights) * -32;
                    groupOffsets[g] = sixteens.GetElement(0);
                    groupOffsets[g + 1] = sixteens.GetElement(4);
                }
            }
            else
                // d_x·Σq_x per 32: what the rows' −dmin·m_s multiply.
                for (long s = 0; s < (long)n * inDim / 32; s++) activationMinimums[s] = scales[s / 8] * sums[s];

            var job = t_kPromptJob ??= new KQuantPromptJob();
            job.Type = type; job.W = w; job.Q = q; job.Scales = scales; job.Sums = sums; job.ActivationMinimums = activationMinimums;
            job.GroupOffsets = groupOffsets; job.Y = y; job.N = n; job.In = inDim; job.Out = outDim; job.RowBytes = (int)TensorTypes.ByteCount(type, inDim);
            pool.For((outDim + ItemRows - 1) / ItemRows, job, threads);
            job.W = null; job.Q = null; job.Scales = null; job.Sums = null; job.ActivationMinimums = null; job.GroupOffsets = null; job.Y = null;
        }
    }

    private sealed class KQuantPromptJob : IParallelWork
    {
        public TensorType Type;
        public byte* W;
        public sbyte* Q;
        public float* Scales, ActivationMinimums, Y;
        public int* Sums, GroupOffsets;
        public int N, In, Out, RowBytes;

        public void Execute(int begin, int end, int worker)
        {
            int superBlocks = In / 256, subBlocks = In / 32, groups = In / 16, j0 = begin * ItemRows, j1 = Math.Min(end * ItemRows, Out);
            int scaleCount = Type == TensorType.Q6_K ? groups : subBlocks;
            if (t_kCodes is null || t_kCodes.Length < 8 * In) t_kCodes = GC.AllocateUninitializedArray<byte>(8 * In, pinned: true);
            if (t_kSubScales is null || t_kSubScales.Length < 8 * scaleCount) t_kSubScales = GC.AllocateUninitializedArray<int>(8 * scaleCount, pinned: true);
            if (t_kRowScales is null || t_kRowScales.Length < 8 * superBlocks) t_kRowScales = GC.AllocateUninitializedArray<float>(8 * superBlocks, pinned: true);
            if (t_kRowMinimums is null || t_kRowMinimums.Length < 8 * subBlocks) t_kRowMinimums = GC.AllocateUninitializedArray<float>(8 * subBlocks, pinned: true);
            fixed (byte* codes = t_kCodes)
            fixed (int* subScales = t_kSubScales)
            fixed (float* rowScales = t_kRowScales, rowMinimums = t_kRowMinimums)
            {
                int j = j0;
                for (; j + 8 <= j1; j += 8)
                {
                    InterleaveKQuant(Type, W + (long)j * RowBytes, RowBytes, superBlocks, codes, subScales, rowScales, rowMinimums);
                    int i = 0;
                    if (Type == TensorType.Q6_K)
                    {
                        for (; i + 4 <= N; i += 4)
                            Rows4Q6K(codes, subScales, rowScales, Q + (long)i * In, Scales + (long)i * superBlocks, GroupOffsets + (long)i * groups, superBlocks, In, Y + (long)i * Out + j, Out);
                        for (; i < N; i++)
                            Row1Q6K(codes, subScales, rowScales, Q + (long)i * In, Scales + (long)i * superBlocks, GroupOffsets + (long)i * groups, superBlocks, Y + (long)i * Out + j);
                    }
                    else
                    {
                        for (; i + 4 <= N; i += 4)
                            Rows4Q4K(codes, subScales, rowScales, rowMinimums, Q + (long)i * In, Scales + (long)i * superBlocks, ActivationMinimums + (long)i * subBlocks,
                                superBlocks, In, Y + (long)i * Out + j, Out);
                        for (; i < N; i++)
                            Row1Q4K(codes, subScales, rowScales, rowMinimums, Q + (long)i * In, Scales + (long)i * superBlocks, ActivationMinimums + (long)i * subBlocks,
                                superBlocks, Y + (long)i * Out + j);
                    }
                }
                // Fewer than 8 rows left: the decode kernels, row by row (the same integer sums, lanes summed instead).
                for (; j < j1; j++)
                    for (int i = 0; i < N; i++)
                    {
                        byte* row = W + (long)j * RowBytes;
                        sbyte* qi = Q + (long)i * In;
                        float* si = Scales + (long)i * superBlocks;
                        int* sums = Sums + (long)i * subBlocks;
                        Y[(long)i * Out + j] = Type switch
                        {
                            TensorType.Q4_K => DotQ4_K(row, qi, si, sums, superBlocks),
                            TensorType.Q5_K => DotQ5_K(row, qi, si, sums, superBlocks),
                            _ => DotQ6_K(row, qi, si, superBlocks),
                        };
                    }
            }
        }
    }

    /// <summary>
    /// The 256 unsigned codes of a super-block in element order into <paramref name="codes"/>, with the layouts of
    /// <see cref="GgmlBlocks"/>. Written per type with the loops over whole 32-byte vectors: one code vector at a time
    /// with the type and chunk as variables cost Q6_K's 64-token prompts a quarter of their time (ggml-gemv --n 64 against --n 512).
    /// The variable shifts go through 16-bit lanes (no byte shift exists); the masks drop the bits that cross from the
    /// upper byte.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void UnpackCodes(TensorType type, byte* block, byte* codes)
    {
        var nibble = Vector256.Create((byte)0xF);
        if (type == TensorType.Q6_K)
            // Half h: element 128h + 32k + l takes its low 4 bits from ql[64h + 32(k % 2) + l] (k ≥ 2: the high nibble) and
            // its high 2 bits from bits 2k, 2k + 1 of qh[32h + l].
            for (int h = 0; h < 2; h++, codes += 128)
            {
                var lowA = Vector256.Load(block + 64 * h);
                var lowB = Vector256.Load(block + 64 * h + 32);
                var high = Vector256.Load(block + 128 + 32 * h);
                var two = Vector256.Create((byte)3);
                ((lowA & nibble) | (high & two) << 4).Store(codes);
                ((lowB & nibble) | ((high.AsUInt16() >>> 2).AsByte() & two) << 4).Store(codes + 32);
                ((lowA >>> 4) | ((high.AsUInt16() >>> 4).AsByte() & two) << 4).Store(codes + 64);
                ((lowB >>> 4) | ((high.AsUInt16() >>> 6).AsByte() & two) << 4).Store(codes + 96);
            }
        else if (type == TensorType.Q5_K)
        {
            // Q4_K's nibbles plus 16 times bit s of qh[l] for sub-block s.
            var qh = Vector256.Load(block + 16).AsUInt16();
            var one = Vector256.Create((byte)1);
            for (int k = 0; k < 4; k++, codes += 64)
            {
                var bytes = Vector256.Load(block + 48 + 32 * k);
                ((bytes & nibble) | ((qh >>> (2 * k)).AsByte() & one) << 4).Store(codes);
                ((bytes >>> 4) | ((qh >>> (2 * k + 1)).AsByte() & one) << 4).Store(codes + 32);
            }
        }
        else
            // Q4_K: sub-blocks 2k and 2k + 1 share qs[32k..32k + 32): low nibbles, then high nibbles.
            for (int k = 0; k < 4; k++, codes += 64)
            {
                var bytes = Vector256.Load(block + 16 + 32 * k);
                (bytes & nibble).Store(codes);
                (bytes >>> 4).Store(codes + 32);
            }
    }

    /// <summary>
    /// 8 rows re-laid for <see cref="Rows4Q4K"/>/<see cref="Rows4Q6K"/>: the codes of chunk c (32 elements) at
    /// <paramref name="codes"/> + 256·c, vector g holding in lane j codes 4g..4g+3 of row j; <paramref name="subScales"/>[8t + j]
    /// is row j's integer scale of sub-block t (Q6_K: of group t of 16); <paramref name="rowScales"/>[8b + j] its d of
    /// super-block b; <paramref name="rowMinimums"/>[8t + j] its −dmin·m_t (Q4_K, Q5_K).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void InterleaveKQuant(TensorType type, byte* w, int rowBytes, int superBlocks, byte* codes, int* subScales, float* rowScales, float* rowMinimums)
    {
        int blockBytes = TensorTypes.BlockBytes(type);
        byte* scaleBytes = stackalloc byte[8 * 16]; // row j's 16 scale bytes at 16j (Q4_K/Q5_K: 8 scales, then 8 mins)
        byte* byScale = stackalloc byte[16 * 8];    // the same, transposed: byte s of the 8 rows at 8s
        float* negativeMinimumScales = stackalloc float[8];
        byte* rows = stackalloc byte[8 * 256];      // the 8 rows' codes of one super-block, in element order
        for (int b = 0; b < superBlocks; b++, rowScales += 8)
        {
            byte* p = w + (long)b * blockBytes;
            for (int j = 0; j < 8; j++)
            {
                byte* block = p + (long)j * rowBytes;
                if (type == TensorType.Q6_K)
                {
                    rowScales[j] = Fp16(block + 208);
                    Vector128.Load(block + 192).Store(scaleBytes + 16 * j);
                }
                else
                {
                    rowScales[j] = Fp16(block);
                    negativeMinimumScales[j] = -Fp16(block + 2);
                    UnpackScaleMinK4(block + 4, scaleBytes + 16 * j);
                }
            }
            TransposeScaleBytes(scaleBytes, byScale);
            if (type == TensorType.Q6_K)
                for (int g = 0; g < 16; g++) Avx2.ConvertToVector256Int32((sbyte*)byScale + 8 * g).Store(subScales + 8 * (16 * b + g));
            else
            {
                var negativeDmin = Vector256.Load(negativeMinimumScales);
                for (int s = 0; s < 8; s++)
                {
                    Avx2.ConvertToVector256Int32(byScale + 8 * s).Store(subScales + 8 * (8 * b + s));
                    (Vector256.ConvertToSingle(Avx2.ConvertToVector256Int32(byScale + 64 + 8 * s)) * negativeDmin).Store(rowMinimums + 8 * (8 * b + s));
                }
            }
            for (int j = 0; j < 8; j++) UnpackCodes(type, p + (long)j * rowBytes, rows + 256 * j);
            for (int c = 0; c < 8; c++, codes += 256)
                LaneInterleave.Store(Vector256.Load(rows + 32 * c), Vector256.Load(rows + 256 + 32 * c), Vector256.Load(rows + 512 + 32 * c), Vector256.Load(rows + 768 + 32 * c),
                    Vector256.Load(rows + 1024 + 32 * c), Vector256.Load(rows + 1280 + 32 * c), Vector256.Load(rows + 1536 + 32 * c), Vector256.Load(rows + 1792 + 32 * c), codes);
        }
    }

    /// <summary>
    /// 8 rows of 16 bytes (at 16j) to 16 rows of 8 (at 8s: byte s of rows 0..7), by interleaving bytes, then pairs, then
    /// quadruples: each step doubles the run of consecutive rows that one scale index holds.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void TransposeScaleBytes(byte* rows, byte* output)
    {
        Vector128<byte> r0 = Vector128.Load(rows), r1 = Vector128.Load(rows + 16), r2 = Vector128.Load(rows + 32), r3 = Vector128.Load(rows + 48);
        Vector128<byte> r4 = Vector128.Load(rows + 64), r5 = Vector128.Load(rows + 80), r6 = Vector128.Load(rows + 96), r7 = Vector128.Load(rows + 112);
        // Bytes: [rows 2i, 2i + 1] per scale, scales 0–7 (low) and 8–15 (high).
        var a0 = Sse2.UnpackLow(r0, r1).AsUInt16(); var a1 = Sse2.UnpackHigh(r0, r1).AsUInt16();
        var a2 = Sse2.UnpackLow(r2, r3).AsUInt16(); var a3 = Sse2.UnpackHigh(r2, r3).AsUInt16();
        var a4 = Sse2.UnpackLow(r4, r5).AsUInt16(); var a5 = Sse2.UnpackHigh(r4, r5).AsUInt16();
        var a6 = Sse2.UnpackLow(r6, r7).AsUInt16(); var a7 = Sse2.UnpackHigh(r6, r7).AsUInt16();
        // Pairs: [rows 0–3] or [rows 4–7] per scale, 4 scales per vector.
        var b0 = Sse2.UnpackLow(a0, a2).AsUInt32(); var b1 = Sse2.UnpackHigh(a0, a2).AsUInt32();
        var b2 = Sse2.UnpackLow(a1, a3).AsUInt32(); var b3 = Sse2.UnpackHigh(a1, a3).AsUInt32();
        var b4 = Sse2.UnpackLow(a4, a6).AsUInt32(); var b5 = Sse2.UnpackHigh(a4, a6).AsUInt32();
        var b6 = Sse2.UnpackLow(a5, a7).AsUInt32(); var b7 = Sse2.UnpackHigh(a5, a7).AsUInt32();
        // Quadruples: [rows 0–7] per scale, 2 scales per vector.
        Sse2.UnpackLow(b0, b4).Store((uint*)output); Sse2.UnpackHigh(b0, b4).Store((uint*)(output + 16));
        Sse2.UnpackLow(b1, b5).Store((uint*)(output + 32)); Sse2.UnpackHigh(b1, b5).Store((uint*)(output + 48));
        Sse2.UnpackLow(b2, b6).Store((uint*)(output + 64)); Sse2.UnpackHigh(b2, b6).Store((uint*)(output + 80));
        Sse2.UnpackLow(b3, b7).Store((uint*)(output + 96)); Sse2.UnpackHigh(b3, b7).Store((uint*)(output + 112));
    }

    /// <summary>
    /// Q4_K/Q5_K: y[r, 0..8) for 4 activation rows against the 8 interleaved W rows. Two sub-blocks at a time, each its
    /// own chain per activation row (8 independent <c>vpdpbusd</c> chains), each group of codes loaded once for the 4 rows;
    /// then each chain times its sub-block's scales joins the super-block's integer sum.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Rows4Q4K(byte* codes, int* subScales, float* rowScales, float* rowMinimums, sbyte* q, float* scales, float* activationMinimums,
        int superBlocks, int inDim, float* y, int yStride)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        for (int b = 0; b < superBlocks; b++)
        {
            Vector256<int> i0 = default, i1 = default, i2 = default, i3 = default;
            for (int s = 0; s < 8; s += 2, codes += 512, subScales += 16)
            {
                int* x0 = (int*)(q + 256 * b + 32 * s);
                int* x1 = (int*)((sbyte*)x0 + inDim), x2 = (int*)((sbyte*)x1 + inDim), x3 = (int*)((sbyte*)x2 + inDim);
                Vector256<int> e0 = default, e1 = default, e2 = default, e3 = default, o0 = default, o1 = default, o2 = default, o3 = default;
                for (int g = 0; g < 8; g++)
                {
                    var c = Vector256.Load(codes + 32 * g);
                    e0 = AvxVnni.MultiplyWideningAndAdd(e0, c, Vector256.Create(x0[g]).AsSByte());
                    e1 = AvxVnni.MultiplyWideningAndAdd(e1, c, Vector256.Create(x1[g]).AsSByte());
                    e2 = AvxVnni.MultiplyWideningAndAdd(e2, c, Vector256.Create(x2[g]).AsSByte());
                    e3 = AvxVnni.MultiplyWideningAndAdd(e3, c, Vector256.Create(x3[g]).AsSByte());
                    c = Vector256.Load(codes + 256 + 32 * g);
                    o0 = AvxVnni.MultiplyWideningAndAdd(o0, c, Vector256.Create(x0[8 + g]).AsSByte());
                    o1 = AvxVnni.MultiplyWideningAndAdd(o1, c, Vector256.Create(x1[8 + g]).AsSByte());
                    o2 = AvxVnni.MultiplyWideningAndAdd(o2, c, Vector256.Create(x2[8 + g]).AsSByte());
                    o3 = AvxVnni.MultiplyWideningAndAdd(o3, c, Vector256.Create(x3[8 + g]).AsSByte());
                }
                var evenScales = Vector256.Load(subScales);
                var oddScales = Vector256.Load(subScales + 8);
                i0 += e0 * evenScales + o0 * oddScales;
                i1 += e1 * evenScales + o1 * oddScales;
                i2 += e2 * evenScales + o2 * oddScales;
                i3 += e3 * evenScales + o3 * oddScales;
            }
            var dw = Vector256.Load(rowScales + 8 * b);
            a0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i0), dw * Vector256.Create(scales[b]), a0);
            a1 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i1), dw * Vector256.Create(scales[b + superBlocks]), a1);
            a2 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i2), dw * Vector256.Create(scales[b + 2 * superBlocks]), a2);
            a3 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i3), dw * Vector256.Create(scales[b + 3 * superBlocks]), a3);
        }
        int subBlocks = 8 * superBlocks;
        for (int t = 0; t < subBlocks; t++)
        {
            var minimum = Vector256.Load(rowMinimums + 8 * t);
            a0 = Vector256.FusedMultiplyAdd(minimum, Vector256.Create(activationMinimums[t]), a0);
            a1 = Vector256.FusedMultiplyAdd(minimum, Vector256.Create(activationMinimums[t + subBlocks]), a1);
            a2 = Vector256.FusedMultiplyAdd(minimum, Vector256.Create(activationMinimums[t + 2 * subBlocks]), a2);
            a3 = Vector256.FusedMultiplyAdd(minimum, Vector256.Create(activationMinimums[t + 3 * subBlocks]), a3);
        }
        a0.Store(y); a1.Store(y + yStride); a2.Store(y + 2 * yStride); a3.Store(y + 3 * yStride);
    }

    /// <summary>Q4_K/Q5_K: y[0..8) for one activation row (the last n mod 4) against the 8 interleaved W rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Row1Q4K(byte* codes, int* subScales, float* rowScales, float* rowMinimums, sbyte* q, float* scales, float* activationMinimums,
        int superBlocks, float* y)
    {
        var acc = Vector256<float>.Zero;
        for (int b = 0; b < superBlocks; b++)
        {
            var isum = Vector256<int>.Zero;
            for (int s = 0; s < 8; s += 2, codes += 512, subScales += 16)
            {
                int* x = (int*)(q + 256 * b + 32 * s);
                Vector256<int> even = default, odd = default;
                for (int g = 0; g < 8; g++)
                {
                    even = AvxVnni.MultiplyWideningAndAdd(even, Vector256.Load(codes + 32 * g), Vector256.Create(x[g]).AsSByte());
                    odd = AvxVnni.MultiplyWideningAndAdd(odd, Vector256.Load(codes + 256 + 32 * g), Vector256.Create(x[8 + g]).AsSByte());
                }
                isum += even * Vector256.Load(subScales) + odd * Vector256.Load(subScales + 8);
            }
            acc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(isum), Vector256.Load(rowScales + 8 * b) * Vector256.Create(scales[b]), acc);
        }
        for (int t = 0; t < 8 * superBlocks; t++) acc = Vector256.FusedMultiplyAdd(Vector256.Load(rowMinimums + 8 * t), Vector256.Create(activationMinimums[t]), acc);
        acc.Store(y);
    }

    /// <summary>
    /// Q6_K: y[r, 0..8) for 4 activation rows against the 8 interleaved W rows. Per chunk of 32 the two groups of 16 are
    /// separate chains per activation row (8 chains), started from −32·Σ₁₆ q_x (<paramref name="groupOffsets"/>) so that
    /// each ends at Σ (q − 32)·q_x, then weighed by the groups' signed scales into the super-block's integer sum.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Rows4Q6K(byte* codes, int* subScales, float* rowScales, sbyte* q, float* scales, int* groupOffsets, int superBlocks, int inDim, float* y, int yStride)
    {
        int groups = 16 * superBlocks;
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        for (int b = 0; b < superBlocks; b++)
        {
            Vector256<int> i0 = default, i1 = default, i2 = default, i3 = default;
            for (int c = 0; c < 8; c++, codes += 256, subScales += 16)
            {
                int* x0 = (int*)(q + 256 * b + 32 * c);
                int* x1 = (int*)((sbyte*)x0 + inDim), x2 = (int*)((sbyte*)x1 + inDim), x3 = (int*)((sbyte*)x2 + inDim);
                int* offsets = groupOffsets + 16 * b + 2 * c;
                Vector256<int> l0 = Vector256.Create(offsets[0]), l1 = Vector256.Create(offsets[groups]);
                Vector256<int> l2 = Vector256.Create(offsets[2 * groups]), l3 = Vector256.Create(offsets[3 * groups]);
                Vector256<int> h0 = Vector256.Create(offsets[1]), h1 = Vector256.Create(offsets[groups + 1]);
                Vector256<int> h2 = Vector256.Create(offsets[2 * groups + 1]), h3 = Vector256.Create(offsets[3 * groups + 1]);
                for (int g = 0; g < 4; g++)
                {
                    var v = Vector256.Load(codes + 32 * g);
                    l0 = AvxVnni.MultiplyWideningAndAdd(l0, v, Vector256.Create(x0[g]).AsSByte());
                    l1 = AvxVnni.MultiplyWideningAndAdd(l1, v, Vector256.Create(x1[g]).AsSByte());
                    l2 = AvxVnni.MultiplyWideningAndAdd(l2, v, Vector256.Create(x2[g]).AsSByte());
                    l3 = AvxVnni.MultiplyWideningAndAdd(l3, v, Vector256.Create(x3[g]).AsSByte());
                    v = Vector256.Load(codes + 128 + 32 * g);
                    h0 = AvxVnni.MultiplyWideningAndAdd(h0, v, Vector256.Create(x0[4 + g]).AsSByte());
                    h1 = AvxVnni.MultiplyWideningAndAdd(h1, v, Vector256.Create(x1[4 + g]).AsSByte());
                    h2 = AvxVnni.MultiplyWideningAndAdd(h2, v, Vector256.Create(x2[4 + g]).AsSByte());
                    h3 = AvxVnni.MultiplyWideningAndAdd(h3, v, Vector256.Create(x3[4 + g]).AsSByte());
                }
                var lowScales = Vector256.Load(subScales);
                var highScales = Vector256.Load(subScales + 8);
                i0 += l0 * lowScales + h0 * highScales;
                i1 += l1 * lowScales + h1 * highScales;
                i2 += l2 * lowScales + h2 * highScales;
                i3 += l3 * lowScales + h3 * highScales;
            }
            var dw = Vector256.Load(rowScales + 8 * b);
            a0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i0), dw * Vector256.Create(scales[b]), a0);
            a1 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i1), dw * Vector256.Create(scales[b + superBlocks]), a1);
            a2 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i2), dw * Vector256.Create(scales[b + 2 * superBlocks]), a2);
            a3 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(i3), dw * Vector256.Create(scales[b + 3 * superBlocks]), a3);
        }
        a0.Store(y); a1.Store(y + yStride); a2.Store(y + 2 * yStride); a3.Store(y + 3 * yStride);
    }

    /// <summary>Q6_K: y[0..8) for one activation row (the last n mod 4) against the 8 interleaved W rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Row1Q6K(byte* codes, int* subScales, float* rowScales, sbyte* q, float* scales, int* groupOffsets, int superBlocks, float* y)
    {
        var acc = Vector256<float>.Zero;
        for (int b = 0; b < superBlocks; b++)
        {
            var isum = Vector256<int>.Zero;
            for (int c = 0; c < 8; c++, codes += 256, subScales += 16)
            {
                int* x = (int*)(q + 256 * b + 32 * c);
                int* offsets = groupOffsets + 16 * b + 2 * c;
                Vector256<int> low = Vector256.Create(offsets[0]), high = Vector256.Create(offsets[1]);
                for (int g = 0; g < 4; g++)
                {
                    low = AvxVnni.MultiplyWideningAndAdd(low, Vector256.Load(codes + 32 * g), Vector256.Create(x[g]).AsSByte());
                    high = AvxVnni.MultiplyWideningAndAdd(high, Vector256.Load(codes + 128 + 32 * g), Vector256.Create(x[4 + g]).AsSByte());
                }
                isum += low * Vector256.Load(subScales) + high * Vector256.Load(subScales + 8);
            }
            acc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(isum), Vector256.Load(rowScales + 8 * b) * Vector256.Create(scales[b]), acc);
        }
        acc.Store(y);
    }
}
