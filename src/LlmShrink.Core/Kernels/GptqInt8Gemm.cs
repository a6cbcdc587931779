using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LlmShrink.Kernels;

/// <summary>
/// The prompt (n &gt; 1) of nibble layers whose 128-input blocks are whole groups (g128 and wider, no act-order) on int8
/// activations, as decode (GptqInt8Gemv.cs) quantizes them: per row of x and block, Σ c·q in integers, then
/// Σ x·w ≈ Σ_blocks scale·d·Σ c·q − Σ_groups scale·zero·(Σ d·Σq). A worker re-lays 8 rows at a time
/// (<see cref="LaneInterleave"/>: lane j of a vector holds 4 codes of row j), so <c>vpdpbusd</c> against 4 broadcast
/// activation bytes advances the 8 rows together and a block's scales apply as one vector of 8 — 32 multiply-adds
/// per 256-bit instruction where the float tiles it replaces (<see cref="TiledGemm"/>) do 16 per 512-bit FMA.
/// </summary>
public sealed unsafe partial class GptqMatMul
{
    /// <summary>Whether prompts run on int8 activations (<see cref="MultiplyPrompt"/>): whole-block nibble layers, AVX-VNNI, rows in whole eights.</summary>
    internal bool IntegerPrompt => IntegerDecode && _wholeBlocks && AvxVnni.IsSupported && OutDim % 8 == 0;

    [ThreadStatic] private static sbyte[]? t_promptQ;
    [ThreadStatic] private static float[]? t_promptPieceScales, t_promptGroupSums;
    [ThreadStatic] private static byte[]? t_laneCodes;
    [ThreadStatic] private static float[]? t_laneScales, t_laneZeroScales;
    [ThreadStatic] private static PromptJob? t_promptJob;

    /// <summary>y[n, out] for <paramref name="x"/> already in the reordered input order.</summary>
    private void MultiplyPrompt(float* x, float* y, int n, byte* codes, float* scales, float* zeros, WorkerPool pool, int threads)
    {
        int blocks = _paddedIn / 128;
        if (t_promptQ is null || t_promptQ.Length < n * _paddedIn) t_promptQ = GC.AllocateUninitializedArray<sbyte>(n * _paddedIn, pinned: true);
        if (t_promptPieceScales is null || t_promptPieceScales.Length < n * blocks) t_promptPieceScales = GC.AllocateUninitializedArray<float>(n * blocks, pinned: true);
        if (t_promptGroupSums is null || t_promptGroupSums.Length < n * Groups) t_promptGroupSums = GC.AllocateUninitializedArray<float>(n * Groups, pinned: true);
        fixed (sbyte* q = t_promptQ)
        fixed (float* pieceScales = t_promptPieceScales, groupSums = t_promptGroupSums)
        fixed (int* blockGroup = _pieceGroup)
        {
            for (int i = 0; i < n; i++) QuantizeX(x + (long)i * _paddedIn, q + (long)i * _paddedIn, pieceScales + (long)i * blocks, groupSums + (long)i * Groups);
            var job = t_promptJob ??= new PromptJob();
            job.Owner = this; job.Codes = codes; job.Scales = scales; job.Zeros = zeros; job.BlockGroup = blockGroup;
            job.Q = q; job.PieceScales = pieceScales; job.GroupSums = groupSums; job.Y = y; job.N = n;
            pool.For((OutDim + DecodeItemRows - 1) / DecodeItemRows, job, threads);
            job.Owner = null; job.Codes = null; job.Scales = job.Zeros = job.PieceScales = job.GroupSums = job.Y = null; job.Q = null; job.BlockGroup = null;
        }
    }

    private sealed class PromptJob : IParallelWork
    {
        public GptqMatMul? Owner;
        public byte* Codes;
        public float* Scales, Zeros, PieceScales, GroupSums, Y;
        public sbyte* Q;
        public int* BlockGroup;
        public int N;

        public void Execute(int begin, int end, int worker)
        {
            var owner = Owner!;
            int blocks = owner._paddedIn / 128, groups = owner.Groups, inDim = owner._paddedIn, outDim = owner.OutDim;
            if (t_laneCodes is null || t_laneCodes.Length < 16 * inDim) t_laneCodes = GC.AllocateUninitializedArray<byte>(16 * inDim, pinned: true);
            if (t_laneScales is null || t_laneScales.Length < 16 * blocks) t_laneScales = GC.AllocateUninitializedArray<float>(16 * blocks, pinned: true);
            if (t_laneZeroScales is null || t_laneZeroScales.Length < 16 * groups) t_laneZeroScales = GC.AllocateUninitializedArray<float>(16 * groups, pinned: true);
            fixed (byte* lanes = t_laneCodes)
            fixed (float* laneScales = t_laneScales, laneZeroScales = t_laneZeroScales)
            {
                int o = begin * DecodeItemRows, last = Math.Min(end * DecodeItemRows, outDim);
                // 16 rows per pass, two re-laid sets of 8 sharing each activation broadcast (as GgmlPromptGemm.cs); a last 8 alone.
                for (; o + 16 <= last; o += 16)
                {
                    owner.Interleave(this, o, lanes, laneScales, laneZeroScales);
                    owner.Interleave(this, o + 8, lanes + 8 * inDim, laneScales + 8 * blocks, laneZeroScales + 8 * groups);
                    int i = 0;
                    for (; i + 4 <= N; i += 4)
                        Rows4x16(lanes, lanes + 8 * inDim, laneScales, laneScales + 8 * blocks, laneZeroScales, laneZeroScales + 8 * groups,
                            Q + (long)i * inDim, PieceScales + (long)i * blocks, GroupSums + (long)i * groups, blocks, groups, inDim, Y + (long)i * outDim + o, outDim);
                    for (; i < N; i++)
                        for (int set = 0; set < 2; set++)
                            Row1(lanes + 8 * set * inDim, laneScales + 8 * set * blocks, laneZeroScales + 8 * set * groups, Q + (long)i * inDim,
                                PieceScales + (long)i * blocks, GroupSums + (long)i * groups, blocks, groups, Y + (long)i * outDim + o + 8 * set);
                }
                for (; o < last; o += 8)
                {
                    owner.Interleave(this, o, lanes, laneScales, laneZeroScales);
                    int i = 0;
                    for (; i + 4 <= N; i += 4)
                        Rows4(lanes, laneScales, laneZeroScales, Q + (long)i * inDim, PieceScales + (long)i * blocks, GroupSums + (long)i * groups,
                            blocks, groups, inDim, Y + (long)i * outDim + o, outDim);
                    for (; i < N; i++)
                        Row1(lanes, laneScales, laneZeroScales, Q + (long)i * inDim, PieceScales + (long)i * blocks, GroupSums + (long)i * groups, blocks, groups, Y + (long)i * outDim + o);
                }
            }
        }
    }

    /// <summary>
    /// Rows o..o+7: each 128-input block's codes as 4 lane-interleaved runs of 32 inputs (1 KB per block), each block's 8
    /// scales, and each group's 8 scale·zero.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Interleave(PromptJob job, int o, byte* lanes, float* laneScales, float* laneZeroScales)
    {
        int blocks = _paddedIn / 128;
        var nibble = Vector256.Create((byte)0xF);
        byte* c0 = job.Codes + RowOffset(o), c4 = job.Codes + RowOffset(o + 4); // two quartets: row o + k is 64·k further in each block
        for (int b = 0; b < blocks; b++, lanes += 1024)
        {
            byte* p = c0 + (long)NibbleBlockStride * b, r = c4 + (long)NibbleBlockStride * b;
            // Byte j of a row's block: input j in its low nibble, input 64 + j in its high one.
            for (int half = 0; half < 2; half++)
            {
                Vector256<byte> L(byte* row) => Vector256.Load(row + 32 * half);
                var a0 = L(p); var a1 = L(p + 64); var a2 = L(p + 128); var a3 = L(p + 192);
                var a4 = L(r); var a5 = L(r + 64); var a6 = L(r + 128); var a7 = L(r + 192);
                LaneInterleave.Store(a0 & nibble, a1 & nibble, a2 & nibble, a3 & nibble, a4 & nibble, a5 & nibble, a6 & nibble, a7 & nibble, lanes + 256 * half);
                LaneInterleave.Store(a0 >>> 4, a1 >>> 4, a2 >>> 4, a3 >>> 4, a4 >>> 4, a5 >>> 4, a6 >>> 4, a7 >>> 4, lanes + 512 + 256 * half);
            }
            int g = job.BlockGroup[b];
            for (int k = 0; k < 8; k++) laneScales[8 * b + k] = job.Scales[(long)(o + k) * Groups + g];
        }
        for (int g = 0; g < Groups; g++)
            for (int k = 0; k < 8; k++) laneZeroScales[8 * g + k] = job.Scales[(long)(o + k) * Groups + g] * job.Zeros[(long)(o + k) * Groups + g];
    }

    /// <summary>y[r, 0..8) for 4 rows of x: per block 32 groups of 4 inputs, two integer chains per row so that consecutive <c>vpdpbusd</c> do not wait on each other.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Rows4(byte* lanes, float* laneScales, float* laneZeroScales, sbyte* q, float* d, float* groupSums, int blocks, int groups, int inDim, float* y, int yStride)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        for (int b = 0; b < blocks; b++, lanes += 1024)
        {
            int* x0 = (int*)(q + 128 * b);
            int* x1 = (int*)((sbyte*)x0 + inDim), x2 = (int*)((sbyte*)x1 + inDim), x3 = (int*)((sbyte*)x2 + inDim);
            Vector256<int> e0 = default, e1 = default, e2 = default, e3 = default, o0 = default, o1 = default, o2 = default, o3 = default;
            for (int g = 0; g < 32; g += 2)
            {
                var c = Vector256.Load(lanes + 32 * g);
                e0 = AvxVnni.MultiplyWideningAndAdd(e0, c, Vector256.Create(x0[g]).AsSByte());
                e1 = AvxVnni.MultiplyWideningAndAdd(e1, c, Vector256.Create(x1[g]).AsSByte());
                e2 = AvxVnni.MultiplyWideningAndAdd(e2, c, Vector256.Create(x2[g]).AsSByte());
                e3 = AvxVnni.MultiplyWideningAndAdd(e3, c, Vector256.Create(x3[g]).AsSByte());
                c = Vector256.Load(lanes + 32 * g + 32);
                o0 = AvxVnni.MultiplyWideningAndAdd(o0, c, Vector256.Create(x0[g + 1]).AsSByte());
                o1 = AvxVnni.MultiplyWideningAndAdd(o1, c, Vector256.Create(x1[g + 1]).AsSByte());
                o2 = AvxVnni.MultiplyWideningAndAdd(o2, c, Vector256.Create(x2[g + 1]).AsSByte());
                o3 = AvxVnni.MultiplyWideningAndAdd(o3, c, Vector256.Create(x3[g + 1]).AsSByte());
            }
            var s = Vector256.Load(laneScales + 8 * b);
            a0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(e0 + o0), s * Vector256.Create(d[b]), a0);
            a1 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(e1 + o1), s * Vector256.Create(d[b + blocks]), a1);
            a2 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(e2 + o2), s * Vector256.Create(d[b + 2 * blocks]), a2);
            a3 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(e3 + o3), s * Vector256.Create(d[b + 3 * blocks]), a3);
        }
        for (int g = 0; g < groups; g++)
        {
            var sz = Vector256.Load(laneZeroScales + 8 * g);
            a0 = Vector256.FusedMultiplyAdd(sz, Vector256.Create(-groupSums[g]), a0);
            a1 = Vector256.FusedMultiplyAdd(sz, Vector256.Create(-groupSums[g + groups]), a1);
            a2 = Vector256.FusedMultiplyAdd(sz, Vector256.Create(-groupSums[g + 2 * groups]), a2);
            a3 = Vector256.FusedMultiplyAdd(sz, Vector256.Create(-groupSums[g + 3 * groups]), a3);
        }
        a0.Store(y); a1.Store(y + yStride); a2.Store(y + 2 * yStride); a3.Store(y + 3 * yStride);
    }

    /// <summary>
    /// <see cref="Rows4"/> for 16 rows, two re-laid sets of 8 (<paramref name="lanesA"/>, <paramref name="lanesB"/>): each
    /// broadcast of 4 activation bytes feeds a <c>vpdpbusd</c> of each set, so the 8 chains need no even/odd split.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Rows4x16(byte* lanesA, byte* lanesB, float* laneScalesA, float* laneScalesB, float* laneZeroScalesA, float* laneZeroScalesB,
        sbyte* q, float* d, float* groupSums, int blocks, int groups, int inDim, float* y, int yStride)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, c0 = default, c1 = default, c2 = default, c3 = default;
        for (int b = 0; b < blocks; b++, lanesA += 1024, lanesB += 1024)
        {
            int* x0 = (int*)(q + 128 * b);
            int* x1 = (int*)((sbyte*)x0 + inDim), x2 = (int*)((sbyte*)x1 + inDim), x3 = (int*)((sbyte*)x2 + inDim);
            Vector256<int> e0 = default, e1 = default, e2 = default, e3 = default, f0 = default, f1 = default, f2 = default, f3 = default;
            for (int g = 0; g < 32; g++)
            {
                var ca = Vector256.Load(lanesA + 32 * g);
                var cb = Vector256.Load(lanesB + 32 * g);
                var v = Vector256.Create(x0[g]).AsSByte(); e0 = AvxVnni.MultiplyWideningAndAdd(e0, ca, v); f0 = AvxVnni.MultiplyWideningAndAdd(f0, cb, v);
                v = Vector256.Create(x1[g]).AsSByte(); e1 = AvxVnni.MultiplyWideningAndAdd(e1, ca, v); f1 = AvxVnni.MultiplyWideningAndAdd(f1, cb, v);
                v = Vector256.Create(x2[g]).AsSByte(); e2 = AvxVnni.MultiplyWideningAndAdd(e2, ca, v); f2 = AvxVnni.MultiplyWideningAndAdd(f2, cb, v);
                v = Vector256.Create(x3[g]).AsSByte(); e3 = AvxVnni.MultiplyWideningAndAdd(e3, ca, v); f3 = AvxVnni.MultiplyWideningAndAdd(f3, cb, v);
            }
            var sa = Vector256.Load(laneScalesA + 8 * b);
            var sb = Vector256.Load(laneScalesB + 8 * b);
            var d0 = Vector256.Create(d[b]); var d1 = Vector256.Create(d[b + blocks]);
            var d2 = Vector256.Create(d[b + 2 * blocks]); var d3 = Vector256.Create(d[b + 3 * blocks]);
            a0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(e0), sa * d0, a0); c0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(f0), sb * d0, c0);
            a1 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(e1), sa * d1, a1); c1 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(f1), sb * d1, c1);
            a2 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(e2), sa * d2, a2); c2 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(f2), sb * d2, c2);
            a3 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(e3), sa * d3, a3); c3 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(f3), sb * d3, c3);
        }
        for (int g = 0; g < groups; g++)
        {
            var za = Vector256.Load(laneZeroScalesA + 8 * g);
            var zb = Vector256.Load(laneZeroScalesB + 8 * g);
            var s0 = Vector256.Create(-groupSums[g]); var s1 = Vector256.Create(-groupSums[g + groups]);
            var s2 = Vector256.Create(-groupSums[g + 2 * groups]); var s3 = Vector256.Create(-groupSums[g + 3 * groups]);
            a0 = Vector256.FusedMultiplyAdd(za, s0, a0); c0 = Vector256.FusedMultiplyAdd(zb, s0, c0);
            a1 = Vector256.FusedMultiplyAdd(za, s1, a1); c1 = Vector256.FusedMultiplyAdd(zb, s1, c1);
            a2 = Vector256.FusedMultiplyAdd(za, s2, a2); c2 = Vector256.FusedMultiplyAdd(zb, s2, c2);
            a3 = Vector256.FusedMultiplyAdd(za, s3, a3); c3 = Vector256.FusedMultiplyAdd(zb, s3, c3);
        }
        a0.Store(y); c0.Store(y + 8); a1.Store(y + yStride); c1.Store(y + yStride + 8);
        a2.Store(y + 2 * yStride); c2.Store(y + 2 * yStride + 8); a3.Store(y + 3 * yStride); c3.Store(y + 3 * yStride + 8);
    }

    /// <summary>y[0..8) for one row of x (the last n mod 4).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Row1(byte* lanes, float* laneScales, float* laneZeroScales, sbyte* q, float* d, float* groupSums, int blocks, int groups, float* y)
    {
        var acc = Vector256<float>.Zero;
        for (int b = 0; b < blocks; b++, lanes += 1024)
        {
            int* x = (int*)(q + 128 * b);
            Vector256<int> even = default, odd = default;
            for (int g = 0; g < 32; g += 2)
            {
                even = AvxVnni.MultiplyWideningAndAdd(even, Vector256.Load(lanes + 32 * g), Vector256.Create(x[g]).AsSByte());
                odd = AvxVnni.MultiplyWideningAndAdd(odd, Vector256.Load(lanes + 32 * g + 32), Vector256.Create(x[g + 1]).AsSByte());
            }
            acc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(even + odd), Vector256.Load(laneScales + 8 * b) * Vector256.Create(d[b]), acc);
        }
        for (int g = 0; g < groups; g++) acc = Vector256.FusedMultiplyAdd(Vector256.Load(laneZeroScales + 8 * g), Vector256.Create(-groupSums[g]), acc);
        acc.Store(y);
    }
}
