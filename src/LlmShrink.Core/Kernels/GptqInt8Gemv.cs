using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LlmShrink.Kernels;

/// <summary>
/// Decode (n = 1) of 3- and 4-bit codes in integers, so that it is bound by reading the codes rather than by
/// arithmetic (the Q4_0 × Q8_0 scheme of llama.cpp; int8 activations as in LLM.int8(), arXiv:2208.07339).
/// <para>
/// x (reordered) is cut into <em>pieces</em>: the steps of one group inside one 128-input block, so a piece never
/// straddles a group and is at most one 64-byte block of codes. Each piece is quantized symmetrically, d = max|x|/127,
/// q = round(x/d) ∈ [−127, 127] (ties to even, as <c>vcvtps2dq</c> rounds), so with w = scale·(c − zero)
/// <code>  Σ x·w ≈ Σ_pieces scale·d·(Σ c·q) − Σ_groups scale·zero·(Σ_{pieces of g} d·Σq)</code>
/// The first sum is integer inside a piece: <c>vpmaddubsw</c> multiplies code bytes c ∈ [0, 15] (unsigned) with q
/// (signed) and adds pairs into int16 (|2·15·127| and the sum of two such — low and high nibbles — stay far below
/// 2^15), <c>vpmaddwd</c> against ones widens to int32 lanes of 4 inputs, and the lanes are converted to float and
/// scaled by scale·d once per piece. The second sum needs only Σq per piece, once per call, and is one short dot
/// product per row over the groups. Per 128 codes and row this is 9 vector instructions, against 24 for the float
/// table kernel, and the x bytes are shared by 4 rows.
/// </para>
/// <para>
/// The result differs from the dequantized product by the rounding of x: each q is off by at most d/2, so
/// |error| ≤ Σ |w|·d/2 (a relative error of about 0.4 % of ‖y‖ for uniformly distributed x).
/// </para>
/// </summary>
public sealed unsafe partial class GptqMatMul
{
    /// <summary>Each piece's group, first step and number of steps (1 .. 8).</summary>
    private readonly int[] _pieceGroup, _pieceStep, _pieceSteps;
    /// <summary>Pieces [BlockPieces[b], BlockPieces[b + 1]) lie in 128-input block b.</summary>
    private readonly int[] _blockPieces;
    /// <summary>Per piece 32 int32 lanes, all ones where the piece's inputs lie: 16 for the low nibbles of its block, 16 for the high ones.</summary>
    private readonly int[] _pieceMasks;

    /// <summary>
    /// Whether every 128-input block is one whole piece (groups of 128 inputs or a multiple, no padding), so that piece
    /// b is block b and decode can take <see cref="Dot4WholeBlocks"/> — the common g128 case.
    /// </summary>
    private readonly bool _wholeBlocks;

    /// <summary>Whether decode runs through int8 activations (nibble codes on AVX-512 BW).</summary>
    private bool IntegerDecode => _storageBits == 4 && Vectorized && Avx512BW.IsSupported;

    private static (int[] Group, int[] Step, int[] Steps, int[] BlockPieces, int[] Masks) Pieces(int storageBits, int[] stepGroup)
    {
        if (storageBits != 4) return ([], [], [], [], []);
        int blocks = stepGroup.Length / 8;
        List<int> group = [], first = [], count = [];
        var blockPieces = new int[blocks + 1];
        for (int b = 0; b < blocks; b++)
        {
            blockPieces[b] = group.Count;
            for (int s = 8 * b; s < 8 * b + 8;)
            {
                int e = s + 1;
                while (e < 8 * b + 8 && stepGroup[e] == stepGroup[s]) e++; // a group's steps are one run
                if (stepGroup[s] >= 0) { group.Add(stepGroup[s]); first.Add(s); count.Add(e - s); }
                s = e;
            }
        }
        blockPieces[blocks] = group.Count;
        var masks = new int[32 * group.Count];
        for (int p = 0; p < group.Count; p++)
            for (int s = first[p]; s < first[p] + count[p]; s++)
            {
                int within = s % 8; // steps 0..3 of a block are its low nibbles, 4..7 its high ones
                masks.AsSpan(32 * p + 16 * (within / 4) + 4 * (within % 4), 4).Fill(-1);
            }
        return (group.ToArray(), first.ToArray(), count.ToArray(), blockPieces, masks);
    }

    /// <summary>
    /// Quantizes the reordered x (<see cref="_paddedIn"/> floats) piece by piece into <paramref name="q"/>, each
    /// piece's d into <paramref name="pieceScales"/>, and per group Σ d·Σq into <paramref name="groupSums"/>.
    /// </summary>
    private void QuantizeX(float* x, sbyte* q, float* pieceScales, float* groupSums)
    {
        new Span<sbyte>(q, _paddedIn).Clear(); // steps after the last run belong to no piece
        new Span<float>(groupSums, Groups).Clear();
        for (int p = 0; p < _pieceGroup.Length; p++)
        {
            float* xp = x + 16 * _pieceStep[p];
            sbyte* qp = q + 16 * _pieceStep[p];
            int length = 16 * _pieceSteps[p];
            var largest = Vector512<float>.Zero;
            for (int i = 0; i < length; i += 16) largest = Vector512.Max(largest, Vector512.Abs(Vector512.Load(xp + i)));
            float amax = 0;
            for (int lane = 0; lane < 16; lane++) amax = Math.Max(amax, largest[lane]);
            float d = amax / 127f, inverse = d == 0 ? 0 : 1f / d;
            var sum = Vector512<int>.Zero;
            for (int i = 0; i < length; i += 16)
            {
                var qi = Avx512F.ConvertToVector512Int32(Vector512.Load(xp + i) * inverse); // rounds to nearest even
                sum += qi;
                Avx512F.ConvertToVector128SByte(qi).Store(qp + i);
            }
            pieceScales[p] = d;
            groupSums[_pieceGroup[p]] += d * Vector512.Sum(sum);
        }
    }

    /// <summary>
    /// How far ahead the codes are prefetched into L2, in rows. With each row's 64-byte blocks stored contiguously, a
    /// 4-bit row of a 2048-wide layer was a 1 KB stream and four rows were read as four short streams, which the hardware
    /// prefetchers barely followed: 7 GB/s from DRAM against 24 GB/s from L3 on one core, 17–19 GB/s once the
    /// next-but-one quartet of rows was prefetched into L2 (prefetcht1; into L1 was slower). Since the quartets are
    /// interleaved (one sequential stream; a pure read of that pattern ran 29–32 GB/s on two cores against 16–24 GB/s for
    /// four 1 KB streams), the prefetch gained ~9 % on one core and nothing measurable on two with the general kernel,
    /// and with <see cref="Dot4WholeBlocks"/> it is within ±3 % either way (slightly ahead on one core, slightly behind
    /// on two); distances of 4 to 24 rows all measured within noise, and 8 stays.
    /// </summary>
    private const int PrefetchRows = 8;

    private void GemvInt8(Job job, int o0, int o1)
    {
        fixed (int* pieceGroup = _pieceGroup, pieceSteps = _pieceSteps, blockPieces = _blockPieces, masks = _pieceMasks)
            // Four rows at a time share each load of x; a short last quartet repeats its last row.
            for (int o = o0; o < o1; o += 4)
            {
                if (_wholeBlocks && o + 4 <= o1) Dot4WholeBlocks(job, o, pieceGroup);
                else Dot4Int8(job, o, Math.Min(o + 1, o1 - 1), Math.Min(o + 2, o1 - 1), Math.Min(o + 3, o1 - 1), pieceGroup, pieceSteps, blockPieces, masks);
            }
    }

    /// <summary>
    /// <see cref="Dot4Int8"/> for a whole quartet of rows r0 .. r0 + 3 of a layer whose blocks are whole pieces: the
    /// quartet's codes are one pointer walking 256 bytes per block and its scales one pointer with a row stride, which
    /// keeps the loop's addresses in registers (the general kernel, with a pointer per row and the piece tables, spilled
    /// them to the stack on every block).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Dot4WholeBlocks(Job job, int r0, int* blockGroup)
    {
        byte* codes = job.Codes + RowOffset(r0); // r0 is a multiple of 4: row r0 + k's block b is at codes + 256·b + 64·k
        float* scales = job.Scales + (long)r0 * Groups;
        long groups = Groups;
        sbyte* xq = job.Quantized;
        float* d = job.PieceScales;
        Vector512<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
        int blocks = _paddedIn / 128;
        long ahead = (long)PrefetchRows * _rowBytes;
        for (int b = 0; b < blocks; b++, codes += NibbleBlockStride, xq += 128)
        {
            Sse.Prefetch1(codes + ahead); Sse.Prefetch1(codes + ahead + 64); Sse.Prefetch1(codes + ahead + 128); Sse.Prefetch1(codes + ahead + 192);
            var xLow = Vector512.Load(xq);
            var xHigh = Vector512.Load(xq + 64);
            float* s = scales + blockGroup[b];
            float dp = d[b];
            acc0 = Vector512.FusedMultiplyAdd(WholeBlock(codes, xLow, xHigh), Vector512.Create(s[0] * dp), acc0);
            acc1 = Vector512.FusedMultiplyAdd(WholeBlock(codes + 64, xLow, xHigh), Vector512.Create(s[groups] * dp), acc1);
            acc2 = Vector512.FusedMultiplyAdd(WholeBlock(codes + 128, xLow, xHigh), Vector512.Create(s[2 * groups] * dp), acc2);
            acc3 = Vector512.FusedMultiplyAdd(WholeBlock(codes + 192, xLow, xHigh), Vector512.Create(s[3 * groups] * dp), acc3);
        }
        job.Y[r0] = Vector512.Sum(acc0) - ZeroTerm(scales, job.Zeros + (long)r0 * Groups, job.GroupSums);
        job.Y[r0 + 1] = Vector512.Sum(acc1) - ZeroTerm(scales + groups, job.Zeros + (long)(r0 + 1) * Groups, job.GroupSums);
        job.Y[r0 + 2] = Vector512.Sum(acc2) - ZeroTerm(scales + 2 * groups, job.Zeros + (long)(r0 + 2) * Groups, job.GroupSums);
        job.Y[r0 + 3] = Vector512.Sum(acc3) - ZeroTerm(scales + 3 * groups, job.Zeros + (long)(r0 + 3) * Groups, job.GroupSums);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Dot4Int8(Job job, int r0, int r1, int r2, int r3, int* pieceGroup, int* pieceSteps, int* blockPieces, int* masks)
    {
        byte* c0 = job.Codes + RowOffset(r0), c1 = job.Codes + RowOffset(r1);
        byte* c2 = job.Codes + RowOffset(r2), c3 = job.Codes + RowOffset(r3);
        float* s0 = job.Scales + (long)r0 * Groups, s1 = job.Scales + (long)r1 * Groups;
        float* s2 = job.Scales + (long)r2 * Groups, s3 = job.Scales + (long)r3 * Groups;
        sbyte* xq = job.Quantized;
        float* d = job.PieceScales;
        Vector512<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
        int blocks = _paddedIn / 128;
        long ahead = (long)PrefetchRows * _rowBytes; // prefetch never faults, so running past the last row is harmless
        for (int b = 0; b < blocks; b++)
        {
            int p0 = blockPieces[b], p1 = blockPieces[b + 1];
            if (p0 == p1) continue; // padding
            int at = NibbleBlockStride * b;
            Sse.Prefetch1(c0 + ahead + at); Sse.Prefetch1(c1 + ahead + at); Sse.Prefetch1(c2 + ahead + at); Sse.Prefetch1(c3 + ahead + at);
            var xLow = Vector512.Load(xq + 128 * b);
            var xHigh = Vector512.Load(xq + 128 * b + 64);
            if (p1 - p0 == 1 && pieceSteps[p0] == 8)
            {
                // The whole block is one piece (groups of 128 or more): one scale·d for all 16 lanes.
                int g = pieceGroup[p0];
                float dp = d[p0];
                acc0 = Vector512.FusedMultiplyAdd(WholeBlock(c0 + at, xLow, xHigh), Vector512.Create(s0[g] * dp), acc0);
                acc1 = Vector512.FusedMultiplyAdd(WholeBlock(c1 + at, xLow, xHigh), Vector512.Create(s1[g] * dp), acc1);
                acc2 = Vector512.FusedMultiplyAdd(WholeBlock(c2 + at, xLow, xHigh), Vector512.Create(s2[g] * dp), acc2);
                acc3 = Vector512.FusedMultiplyAdd(WholeBlock(c3 + at, xLow, xHigh), Vector512.Create(s3[g] * dp), acc3);
            }
            else
            {
                acc0 += SplitBlock(c0 + at, xLow, xHigh, s0, p0, p1, pieceGroup, d, masks);
                acc1 += SplitBlock(c1 + at, xLow, xHigh, s1, p0, p1, pieceGroup, d, masks);
                acc2 += SplitBlock(c2 + at, xLow, xHigh, s2, p0, p1, pieceGroup, d, masks);
                acc3 += SplitBlock(c3 + at, xLow, xHigh, s3, p0, p1, pieceGroup, d, masks);
            }
        }
        job.Y[r3] = Vector512.Sum(acc3) - ZeroTerm(s3, job.Zeros + (long)r3 * Groups, job.GroupSums);
        job.Y[r2] = Vector512.Sum(acc2) - ZeroTerm(s2, job.Zeros + (long)r2 * Groups, job.GroupSums);
        job.Y[r1] = Vector512.Sum(acc1) - ZeroTerm(s1, job.Zeros + (long)r1 * Groups, job.GroupSums);
        job.Y[r0] = Vector512.Sum(acc0) - ZeroTerm(s0, job.Zeros + (long)r0 * Groups, job.GroupSums);
    }

    /// <summary>Σ c·q of one 64-byte block in 16 int32 lanes (as floats, exact: |lane| ≤ 8·15·127).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> WholeBlock(byte* codes, Vector512<sbyte> xLow, Vector512<sbyte> xHigh)
    {
        var packed = Vector512.Load(codes);
        var nibble = Vector512.Create((byte)15);
        var low = packed & nibble;
        var high = (packed.AsUInt16() >>> 4).AsByte() & nibble;
        var pairs = Avx512BW.MultiplyAddAdjacent(low, xLow) + Avx512BW.MultiplyAddAdjacent(high, xHigh);
        return Avx512F.ConvertToVector512Single(Avx512BW.MultiplyAddAdjacent(pairs, Vector512.Create((short)1)));
    }

    /// <summary>A block shared by several pieces: each lane (4 inputs, inside one step) is scaled by its own piece's scale·d.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> SplitBlock(byte* codes, Vector512<sbyte> xLow, Vector512<sbyte> xHigh, float* scales, int p0, int p1,
        int* pieceGroup, float* d, int* masks)
    {
        var packed = Vector512.Load(codes);
        var nibble = Vector512.Create((byte)15);
        var ones = Vector512.Create((short)1);
        var low = Avx512F.ConvertToVector512Single(Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(packed & nibble, xLow), ones));
        var high = Avx512F.ConvertToVector512Single(Avx512BW.MultiplyAddAdjacent(
            Avx512BW.MultiplyAddAdjacent((packed.AsUInt16() >>> 4).AsByte() & nibble, xHigh), ones));
        Vector512<float> lowScale = default, highScale = default;
        for (int p = p0; p < p1; p++)
        {
            var scale = Vector512.Create(scales[pieceGroup[p]] * d[p]);
            lowScale = Vector512.ConditionalSelect(Vector512.Load(masks + 32 * p).AsSingle(), scale, lowScale);
            highScale = Vector512.ConditionalSelect(Vector512.Load(masks + 32 * p + 16).AsSingle(), scale, highScale);
        }
        return Vector512.FusedMultiplyAdd(low, lowScale, high * highScale);
    }

    /// <summary>Σ_g scale·zero·(Σ d·Σq of group g) for one row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private float ZeroTerm(float* scales, float* zeros, float* groupSums)
    {
        var acc = Vector512<float>.Zero;
        int g = 0;
        for (; g + 16 <= Groups; g += 16)
            acc = Vector512.FusedMultiplyAdd(Vector512.Load(scales + g) * Vector512.Load(zeros + g), Vector512.Load(groupSums + g), acc);
        float sum = Vector512.Sum(acc);
        for (; g < Groups; g++) sum += scales[g] * zeros[g] * groupSums[g];
        return sum;
    }

    /// <summary>
    /// The int8 decode written plainly, from the unpacked <paramref name="codes"/> [out, in] this layer was built from:
    /// the same pieces and activation rounding, exact integer Σ c·q per piece, and the pieces combined in double.
    /// <paramref name="magnitude"/>[o] receives Σ |terms| of row o, the scale of the kernel's float rounding.
    /// </summary>
    internal void ReferenceInt8(ReadOnlySpan<byte> codes, ReadOnlySpan<float> x, Span<float> y, Span<double> magnitude)
    {
        if (_storageBits != 4) throw new InvalidOperationException("the int8 decode is for 3- and 4-bit codes");
        var xs = new float[_paddedIn];
        for (int p = 0; p < _paddedIn; p++) xs[p] = _gather[p] < 0 ? 0 : x[_gather[p]];
        var q = new int[_paddedIn];
        var d = new float[_pieceGroup.Length];
        var groupSums = new float[Groups];
        for (int p = 0; p < _pieceGroup.Length; p++)
        {
            int begin = 16 * _pieceStep[p], end = begin + 16 * _pieceSteps[p];
            float amax = 0;
            for (int i = begin; i < end; i++) amax = Math.Max(amax, Math.Abs(xs[i]));
            d[p] = amax / 127f;
            float inverse = d[p] == 0 ? 0 : 1f / d[p];
            int sum = 0;
            for (int i = begin; i < end; i++) sum += q[i] = (int)MathF.Round(xs[i] * inverse);
            groupSums[_pieceGroup[p]] += d[p] * sum;
        }
        for (int o = 0; o < OutDim; o++)
        {
            double total = 0, size = 0;
            for (int p = 0; p < _pieceGroup.Length; p++)
            {
                long dot = 0;
                for (int i = 16 * _pieceStep[p]; i < 16 * (_pieceStep[p] + _pieceSteps[p]); i++)
                    if (_gather[i] >= 0) dot += codes[o * InDim + _gather[i]] * q[i];
                double term = (double)(_scales[o * Groups + _pieceGroup[p]] * d[p]) * dot;
                total += term;
                size += Math.Abs(term);
            }
            for (int g = 0; g < Groups; g++)
            {
                double term = (double)(_scales[o * Groups + g] * _zeros[o * Groups + g]) * groupSums[g];
                total -= term;
                size += Math.Abs(term);
            }
            y[o] = (float)total;
            magnitude[o] = size;
        }
    }
}
