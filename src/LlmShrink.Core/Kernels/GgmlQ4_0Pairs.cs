using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using LlmShrink.Formats;

namespace LlmShrink.Kernels;

/// <summary>
/// Q4_0 decode two blocks at a time. A block's 16 code bytes hold elements 0..15 in their low nibbles and 16..31 in
/// their high ones, so blocks b and b + 1 loaded into the two halves of one 256-bit vector split, with one mask and one
/// shift for both, into [b: 0..15 | b + 1: 0..15] and [b: 16..31 | b + 1: 16..31]. The activations are arranged once per
/// call into that order (<see cref="ArrangePairs"/>), so two <c>vpdpbusd</c> leave block b's dot in int32 lanes 0–3 and
/// block b + 1's in lanes 4–7, and one convert and one FMA with the scale vector [d_b·d_x,b ×4 | d_b+1·d_x,b+1 ×4]
/// finish both blocks, instead of a nibble split, convert, scale product and FMA per block: 21 instructions per pair
/// instead of 42 (JIT disassembly, loop included). ggml-gemv 8192×2048 Q4_0, old µs / new µs alternating on a loaded
/// Zen 4: 1.26–1.44 (in L3) and 1.23–1.30 (from DRAM) at 1 and 2 threads, e.g. 572 → 397 µs at 1 thread.
/// <para>
/// Several W rows per pass then share each pair record's four loads: two rows a further 1.19–1.41× at 1 thread
/// (ggml-gemv, L3 and DRAM, A-B-B-A rounds), four rows (<see cref="DotQ4_0PairsFourRows"/>) 1.06–1.19× on top of two.
/// All together against the per-block kernel: ggml-gemv Q4_0 2.08–2.17× at 1 thread in L3 (e.g. 540 → 249 µs, now
/// half of Q8_0's time for half its bytes); generation of a Llama-3.2-1B-shaped Q4_0 model at 2 threads 1.34–1.52×
/// (mean tokens/s per A-B-B-A round, e.g. 16.7 → 23.3).
/// </para>
/// </summary>
public static unsafe partial class GgmlMatMul
{
    /// <summary>
    /// One pair record: 32 activations matching the low nibbles, 32 matching the high nibbles, the eight int32 lane
    /// starts and the eight activation scales.
    /// </summary>
    private const int PairBytes = 128;

    /// <summary>
    /// For each pair of blocks (b, b + 1) of one x row, the record <see cref="AccumulatePair"/> reads:
    /// [x_b 0..15, x_b+1 0..15], [x_b 16..31, x_b+1 16..31], lanes 0–3 starting from −2·Σq_b and lanes 4–7 from
    /// −2·Σq_b+1 (four lanes per block sum to −8·Σq: Q4_0's nibbles are w + 8, see <see cref="CodeOffset"/>), and
    /// [d_x,b ×4 | d_x,b+1 ×4]. An odd last block has no record.
    /// </summary>
    private static void ArrangePairs(sbyte* q, float* scales, int* sums, byte* pairs, int blocks)
    {
        int laneStart = -CodeOffset(TensorType.Q4_0) / 4;
        for (int b = 0; b + 2 <= blocks; b += 2, pairs += PairBytes)
        {
            sbyte* x = q + 32 * b;
            Vector256.Create(Vector128.Load(x), Vector128.Load(x + 32)).Store((sbyte*)pairs);
            Vector256.Create(Vector128.Load(x + 16), Vector128.Load(x + 48)).Store((sbyte*)pairs + 32);
            Vector256.Create(Vector128.Create(laneStart * sums[b]), Vector128.Create(laneStart * sums[b + 1])).Store((int*)(pairs + 64));
            Vector256.Create(Vector128.Create(scales[b]), Vector128.Create(scales[b + 1])).Store((float*)(pairs + 96));
        }
    }

    /// <summary>
    /// One W row against one x row arranged by <see cref="ArrangePairs"/>, for the rows left over by
    /// <see cref="DotQ4_0PairsFourRows"/>; <paramref name="q"/>, <paramref name="scales"/> and <paramref name="offsets"/>
    /// serve an odd last block. Two pairs per pass into two accumulators, because one FMA chain waits 4 cycles per step on Zen 4.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotQ4_0Pairs(byte* w, byte* pairs, sbyte* q, float* scales, int* offsets, int blocks)
    {
        Vector256<float> first = default, second = default;
        var mask = Vector256.Create((byte)0xF); // a local, or the JIT reloads it in every pass
        int b = 0;
        for (; b + 4 <= blocks; b += 4, w += 72, pairs += 2 * PairBytes)
        {
            first = AccumulatePair(first, w, PairRecord.Load(pairs), mask);
            second = AccumulatePair(second, w + 36, PairRecord.Load(pairs + PairBytes), mask);
        }
        if (b + 2 <= blocks)
        {
            first = AccumulatePair(first, w, PairRecord.Load(pairs), mask);
            b += 2;
            w += 36;
        }
        if (b < blocks) second = AccumulateBlock(second, w, q + 32 * b, offsets[b], scales[b]);
        return Vector256.Sum(first + second);
    }

    /// <summary>
    /// W rows <paramref name="w"/> + k·<paramref name="rowStep"/> rows (k = 0..3) against one arranged x row, into
    /// y[k·<paramref name="rowStep"/>]; the four rows share each pair record's loads. The caller takes rows a quarter of a
    /// work item apart: two adjacent rows read in step ran 2.8× slower from DRAM (ggml-gemv copies 8: 1160 against
    /// 420 µs; in L3 they were not slower), presumably the hardware prefetcher meeting interleaved streams 1152 bytes
    /// apart. No spills: the loop keeps 12 vector registers (JIT disassembly, .NET 10).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DotQ4_0PairsFourRows(byte* w, int rowBytes, int rowStep, byte* pairs, sbyte* q, float* scales, int* offsets, int blocks, float* y)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default; // four FMA chains: no second accumulator per row needed
        var mask = Vector256.Create((byte)0xF);
        long step = (long)rowStep * rowBytes;
        byte* w1 = w + step, w2 = w + 2 * step, w3 = w + 3 * step;
        int b = 0;
        for (; b + 2 <= blocks; b += 2, w += 36, w1 += 36, w2 += 36, w3 += 36, pairs += PairBytes)
        {
            var x = PairRecord.Load(pairs);
            a0 = AccumulatePair(a0, w, x, mask);
            a1 = AccumulatePair(a1, w1, x, mask);
            a2 = AccumulatePair(a2, w2, x, mask);
            a3 = AccumulatePair(a3, w3, x, mask);
        }
        if (b < blocks)
        {
            a0 = AccumulateBlock(a0, w, q + 32 * b, offsets[b], scales[b]);
            a1 = AccumulateBlock(a1, w1, q + 32 * b, offsets[b], scales[b]);
            a2 = AccumulateBlock(a2, w2, q + 32 * b, offsets[b], scales[b]);
            a3 = AccumulateBlock(a3, w3, q + 32 * b, offsets[b], scales[b]);
        }
        y[0] = Vector256.Sum(a0);
        y[rowStep] = Vector256.Sum(a1);
        y[2 * rowStep] = Vector256.Sum(a2);
        y[3 * rowStep] = Vector256.Sum(a3);
    }

    /// <summary>A pair record in registers (see <see cref="ArrangePairs"/>).</summary>
    private readonly struct PairRecord(Vector256<sbyte> low, Vector256<sbyte> high, Vector256<int> laneStarts, Vector256<float> scales)
    {
        public readonly Vector256<sbyte> Low = low, High = high;
        public readonly Vector256<int> LaneStarts = laneStarts;
        public readonly Vector256<float> Scales = scales;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static PairRecord Load(byte* pair) => new(Vector256.Load((sbyte*)pair), Vector256.Load((sbyte*)pair + 32),
            Vector256.Load((int*)(pair + 64)), Vector256.Load((float*)(pair + 96)));
    }

    /// <summary><paramref name="acc"/> plus blocks <paramref name="w"/> and <paramref name="w"/> + 18 against their pair record.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> AccumulatePair(Vector256<float> acc, byte* w, in PairRecord x, Vector256<byte> mask)
    {
        var codes = Vector256.Create(Vector128.Load(w + 2), Vector128.Load(w + 20));
        var low = codes & mask;
        var high = (codes.AsUInt16() >>> 4).AsByte() & mask;
        var dot = DotUnsigned(DotUnsigned(x.LaneStarts, low, x.Low), high, x.High);
        var weightScales = Vector256.Create(Vector128.Create(Fp16(w)), Vector128.Create(Fp16(w + 18)));
        return Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(dot), weightScales * x.Scales, acc);
    }

    /// <summary><paramref name="acc"/> plus one block against its 32 activations in element order (an odd last block).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> AccumulateBlock(Vector256<float> acc, byte* w, sbyte* x, int offset, float scale) =>
        Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(DotUnsigned(Vector256.Create(offset), Nibbles(w + 2), Vector256.Load(x))),
            Vector256.Create(Fp16(w) * scale), acc);
}
