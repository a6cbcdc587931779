using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LlmShrink.Kernels;

/// <summary>
/// y[n, out] = x[n, in]·Ŵᵀ for a 2:4-sparse 4-bit matrix (<see cref="Sparse24Int4Matrix"/>).
/// <para>
/// Decode (n ≤ <see cref="MaxDecodeRows"/>) reads only the kept codes and their places, in integers like GptqMatMul's
/// int8 decode (GptqInt8Gemv.cs): x is quantized to int8 per <em>piece</em> (one group inside one 128-input block:
/// d = max|x|/127, q = round(x/d), <see cref="QuantizeActivations"/>), and for each row and block of 128 inputs
/// <code>
///   index[j] = 4·(j/2) + place[j]                       (vpmultishiftqb of the 16 place bytes, vpternlogd)
///   xq[j]    = q[index[j]]                              (vpermi2b: the 64 kept inputs out of 128)
///   pairs    = Σ code·xq − Σ zero·xq over slot pairs    (two vpmaddubsw, vpsubw: |pair| ≤ 2·16·127)
///   acc     += float(Σ of 4 slots) · scale·d            (vpmaddwd with ones, vcvtdq2ps, vfmadd)
/// </code>
/// so a row never touches its pruned inputs, and the zero-point enters per kept weight (Σ zero·x over the kept inputs
/// differs from row to row, unlike the dense kernel's one Σq per group). The result is the dequantized product of a
/// slightly rounded x: each q is off by at most d/2, so |error| ≤ Σ|w|·d/2. Four rows at a time share each load of x;
/// with n &gt; 1 each x row passes over a quartet's bytes while they are in L1, so the matrix is read from memory once.
/// </para>
/// <para>
/// Prompt (n &gt; <see cref="MaxDecodeRows"/>) is arithmetic-bound: tiles of rows are decoded to float (zeros at
/// pruned inputs) and multiplied on <see cref="MatMul"/>'s micro-kernel through <see cref="TiledGemm"/>, as GptqMatMul does.
/// </para>
/// </summary>
public static unsafe class Sparse24MatMul
{
    /// <summary>
    /// The largest n that takes the integer decode path; larger batches take the exact tiled float path, as GptqMatMul's
    /// prompts do. The integer path costs n passes of compute over each quartet (while it is in L1) and the float path
    /// decodes every tile once, yet on 8192×2048 (one thread, from L3) the integer path stayed faster at every n tried:
    /// n = 2: 0.5–0.6 ms against 5–8.5 ms, n = 8: 1.0–1.9 ms against 7.2–8.6 ms, n = 16: 1.8–2.9 ms against 9–12 ms.
    /// 8 covers speculative decoding's batches; prompts keep float activations.
    /// </summary>
    public const int MaxDecodeRows = 8;

    /// <summary>Quartets of rows per parallel work item (16 rows, as GptqMatMul's decode).</summary>
    private const int ItemQuartets = 4;

    /// <summary>Whether the AVX-512 kernels can run (VBMI: vpermi2b, vpermb, vpmultishiftqb; BW: vpmaddubsw; GFNI: the high nibbles).</summary>
    internal static bool Vectorized => Avx512BW.IsSupported && Avx512Vbmi.IsSupported && Gfni.V512.IsSupported;

    [ThreadStatic] private static Job? t_job;
    [ThreadStatic] private static sbyte[]? t_quantized;
    [ThreadStatic] private static float[]? t_pieceScales, t_blockScales, t_padded, t_row;

    public static void Multiply(Sparse24Int4Matrix w, ReadOnlySpan<float> x, Span<float> y, int n, WorkerPool? pool = null, int threads = 0) =>
        Multiply(w, x, y, n, pool, threads, Vectorized);

    /// <summary><see cref="Multiply(Sparse24Int4Matrix, ReadOnlySpan{float}, Span{float}, int, WorkerPool?, int)"/>; tests switch <paramref name="vectorized"/> off to check the portable path.</summary>
    internal static void Multiply(Sparse24Int4Matrix w, ReadOnlySpan<float> x, Span<float> y, int n, WorkerPool? pool, int threads, bool vectorized)
    {
        ArgumentNullException.ThrowIfNull(w);
        if (n < 0) throw new ArgumentOutOfRangeException(nameof(n));
        MatMulShapes.Check(x.Length, y.Length, n, w.InDim, w.OutDim);
        if (n == 0) return;
        pool ??= WorkerPool.Shared;
        vectorized &= Vectorized;
        fixed (float* px = x, py = y)
        fixed (byte* stream = w.Stream, zeros = w.ZeroStream)
        fixed (ushort* scales = w.ScaleStream)
        {
            var job = t_job ??= new Job();
            job.W = w; job.X = px; job.Y = py; job.N = n; job.Vectorized = vectorized;
            job.Stream = stream; job.Scales = (short*)scales; job.Zeros = zeros;
            if (n <= MaxDecodeRows && vectorized)
            {
                int blockScales = n * w.Blocks * 16;
                if (t_quantized is null || t_quantized.Length < n * w.PaddedIn) t_quantized = GC.AllocateUninitializedArray<sbyte>(n * w.PaddedIn, pinned: true);
                if (t_blockScales is null || t_blockScales.Length < blockScales) t_blockScales = GC.AllocateUninitializedArray<float>(blockScales, pinned: true);
                fixed (sbyte* quantized = t_quantized)
                fixed (float* scalesOfBlocks = t_blockScales)
                {
                    QuantizeX(w, x, n, quantized, scalesOfBlocks);
                    job.Quantized = quantized; job.BlockScales = scalesOfBlocks;
                    pool.For((w.Quartets + ItemQuartets - 1) / ItemQuartets, job, threads);
                    job.Quantized = null; job.BlockScales = null;
                }
            }
            else if (n <= MaxDecodeRows) pool.For((w.Quartets + ItemQuartets - 1) / ItemQuartets, job, threads);
            else TiledGemm.Multiply(job, px, py, n, w.InDim, w.OutDim, pool, threads);
            job.W = null; job.X = job.Y = null; job.Stream = job.Zeros = null; job.Scales = null;
        }
    }

    /// <summary>
    /// Each x row to int8, piece by piece, into <paramref name="quantized"/> [n, PaddedIn] (0 on padding), and per block
    /// the 16-float vector the kernel multiplies the quartet's scales with: entry r·P + h = d of the block's h-th piece.
    /// With one group per block (P = 1) the vector is per superblock instead: entries 0–3 the first block's d, 4–7 the second's.
    /// </summary>
    private static void QuantizeX(Sparse24Int4Matrix w, ReadOnlySpan<float> x, int n, sbyte* quantized, float* blockScales)
    {
        int piece = Math.Min(w.GroupSize, Sparse24Int4Matrix.BlockInputs), pieces = w.PaddedIn / piece, perBlock = w.GroupsPerBlock;
        if (t_pieceScales is null || t_pieceScales.Length < pieces) t_pieceScales = new float[pieces];
        for (int r = 0; r < n; r++)
        {
            ReadOnlySpan<float> row = x.Slice(r * w.InDim, w.InDim);
            if (w.InDim != w.PaddedIn)
            {
                if (t_padded is null || t_padded.Length < w.PaddedIn) t_padded = new float[w.PaddedIn];
                row.CopyTo(t_padded);
                t_padded.AsSpan(w.InDim, w.PaddedIn - w.InDim).Clear();
                row = t_padded.AsSpan(0, w.PaddedIn);
            }
            QuantizeActivations.Quantize(row, piece, new Span<sbyte>(quantized + (long)r * w.PaddedIn, w.PaddedIn), t_pieceScales, default);
            float* d = blockScales + (long)r * w.Blocks * 16;
            new Span<float>(d, w.Blocks * 16).Clear();
            if (perBlock == 1)
                for (int b = 0; b < w.Blocks; b++) // per superblock: its first block's d four times, then its second's
                    new Span<float>(d + 16 * (b / 2) + 4 * (b % 2), 4).Fill(t_pieceScales[b]);
            else
                for (int b = 0; b < w.Blocks; b++)
                    for (int row4 = 0; row4 < 4; row4++)
                        for (int h = 0; h < perBlock; h++)
                            d[16 * b + row4 * perBlock + h] = t_pieceScales[b * perBlock + h];
        }
    }

    private sealed class Job : IParallelWork, IRowDecoder
    {
        public Sparse24Int4Matrix? W;
        public float* X, Y;
        public int N;
        public bool Vectorized;
        public byte* Stream, Zeros;
        public short* Scales;
        /// <summary>Integer decode: x quantized [N, PaddedIn], and per x row and block the piece scales d (16 floats).</summary>
        public sbyte* Quantized;
        public float* BlockScales;

        public void Execute(int begin, int end, int worker)
        {
            int q0 = begin * ItemQuartets, q1 = Math.Min(end * ItemQuartets, W!.Quartets);
            if (Quantized != null && W.GroupsPerBlock == 1) DecodeQuartetsWholeBlocks(this, q0, q1);
            else if (Quantized != null) DecodeQuartets(this, q0, q1);
            else GemvPortable(this, 4 * q0, Math.Min(4 * q1, W.OutDim));
        }

        public void DecodeRow(int row, int k0, int len, float* destination)
        {
            if (Vectorized) DecodeRowVectorized(this, row, k0, len, destination);
            else DecodeRowScalar(W!, row, k0, len, destination);
        }
    }

    // ---------------------------------------------------------------- decode: integer kernel

    /// <summary>
    /// Byte j of 64-bit lane L: shift 2·(8·(L/2) + j mod 8), the offset of slot j's place in that lane's word
    /// (<see cref="Sparse24Int4Matrix.PositionField"/>).
    /// </summary>
    private static readonly byte[] s_placeShifts = Enumerable.Range(0, 64).Select(j => (byte)(2 * (8 * (j / 8 / 2) + j % 8))).ToArray();
    /// <summary>4·(j/2): the first input of slot j's quad inside the block.</summary>
    private static readonly byte[] s_slotBases = Enumerable.Range(0, 64).Select(j => (byte)(4 * (j / 2))).ToArray();

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DecodeQuartets(Job job, int q0, int q1)
    {
        var w = job.W!;
        int superblocks = w.Superblocks, blocks = w.Blocks, perBlock = w.GroupsPerBlock, meta = 4 * perBlock;
        int usedBlocks = (w.InDim + Sparse24Int4Matrix.BlockInputs - 1) / Sparse24Int4Matrix.BlockInputs;
        int fullSuperblocks = usedBlocks / 2; // with an odd number of blocks the last superblock's second block is all padding: skipped
        var placeShifts = Vector512.Create(s_placeShifts);
        var slotBases = Vector512.Create(s_slotBases);
        // Row r's slot j (lane j/4) belongs to the block's group h = j·P/64: its zero is entry r·P + h of the block's
        // zeros, its scale·d entry r·P + h of the block's scale vector.
        int log = perBlock == 4 ? 2 : perBlock == 2 ? 1 : 0;
        var slot = Vector512<byte>.Indices;
        var lane = Vector512<int>.Indices;
        var groupOfSlot = Vector512.ShiftRightLogical(slot, 6 - log);
        var groupOfLane = Vector512.ShiftRightLogical(lane, 4 - log);
        var zeroIndex0 = groupOfSlot;
        var zeroIndex1 = groupOfSlot + Vector512.Create((byte)perBlock);
        var zeroIndex2 = groupOfSlot + Vector512.Create((byte)(2 * perBlock));
        var zeroIndex3 = groupOfSlot + Vector512.Create((byte)(3 * perBlock));
        var scaleIndex0 = groupOfLane;
        var scaleIndex1 = groupOfLane + Vector512.Create(perBlock);
        var scaleIndex2 = groupOfLane + Vector512.Create(2 * perBlock);
        var scaleIndex3 = groupOfLane + Vector512.Create(3 * perBlock);
        var nibble = Vector512.Create((byte)15);

        for (int quartet = q0; quartet < q1; quartet++)
            for (int r = 0; r < job.N; r++)
            {
                byte* record = job.Stream + (long)quartet * superblocks * Sparse24Int4Matrix.RecordBytes;
                short* scales = job.Scales + (long)quartet * blocks * meta;
                byte* zeros = job.Zeros + (long)quartet * blocks * meta;
                sbyte* xq = job.Quantized + (long)r * w.PaddedIn;
                float* d = job.BlockScales + (long)r * blocks * 16;
                Vector512<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
                for (int s = 0; s < superblocks; s++, record += Sparse24Int4Matrix.RecordBytes, xq += 256, d += 32, scales += 2 * meta, zeros += 2 * meta)
                {
                    Prefetch(record + PrefetchBytes);
                    byte* places = record + Sparse24Int4Matrix.PositionsOffset;
                    // First block: the low nibbles.
                    var xLow = Vector512.Load(xq);
                    var xHigh = Vector512.Load(xq + 64);
                    var sv = HalfToSingle(Vector256.Load(scales)) * Vector512.Load(d);
                    var zv = Vector128.Load(zeros).ToVector256Unsafe().ToVector512Unsafe();
                    acc0 = Row(Vector512.Load(record) & nibble, places, xLow, xHigh, zv, zeroIndex0, sv, scaleIndex0, placeShifts, slotBases, acc0);
                    acc1 = Row(Vector512.Load(record + 64) & nibble, places + 32, xLow, xHigh, zv, zeroIndex1, sv, scaleIndex1, placeShifts, slotBases, acc1);
                    acc2 = Row(Vector512.Load(record + 128) & nibble, places + 64, xLow, xHigh, zv, zeroIndex2, sv, scaleIndex2, placeShifts, slotBases, acc2);
                    acc3 = Row(Vector512.Load(record + 192) & nibble, places + 96, xLow, xHigh, zv, zeroIndex3, sv, scaleIndex3, placeShifts, slotBases, acc3);
                    if (s >= fullSuperblocks) break;
                    // Second block: the high nibbles.
                    xLow = Vector512.Load(xq + 128);
                    xHigh = Vector512.Load(xq + 192);
                    sv = HalfToSingle(Vector256.Load(scales + meta)) * Vector512.Load(d + 16);
                    zv = Vector128.Load(zeros + meta).ToVector256Unsafe().ToVector512Unsafe();
                    acc0 = Row(High(record), places + 16, xLow, xHigh, zv, zeroIndex0, sv, scaleIndex0, placeShifts, slotBases, acc0);
                    acc1 = Row(High(record + 64), places + 48, xLow, xHigh, zv, zeroIndex1, sv, scaleIndex1, placeShifts, slotBases, acc1);
                    acc2 = Row(High(record + 128), places + 80, xLow, xHigh, zv, zeroIndex2, sv, scaleIndex2, placeShifts, slotBases, acc2);
                    acc3 = Row(High(record + 192), places + 112, xLow, xHigh, zv, zeroIndex3, sv, scaleIndex3, placeShifts, slotBases, acc3);
                }
                StoreSums(job.Y + (long)r * w.OutDim, 4 * quartet, w.OutDim, acc0, acc1, acc2, acc3);
            }
    }

    /// <summary>
    /// <see cref="DecodeQuartets"/> for groups of 128 inputs or more, one group per block (the common g128): a row's block
    /// has one zero and one scale·d, so both are broadcast from memory (a load, no shuffle) instead of permuted out of
    /// the quartet's vectors, and the 8 float16 scales of a quartet's superblock (4 rows × 2 blocks) are converted in one go.
    /// That takes the work per row and block from ~15 vector instructions to ~13 (the general kernel spent ~2 on the
    /// quartet's x loads, scale conversion and zeros, and a vpermps per row): 8192×2048 from L3 on one thread, 30–31 GB/s
    /// of packed bytes before, 32–38 after (three runs each on a loaded machine).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DecodeQuartetsWholeBlocks(Job job, int q0, int q1)
    {
        var w = job.W!;
        int superblocks = w.Superblocks, blocks = w.Blocks;
        int usedBlocks = (w.InDim + Sparse24Int4Matrix.BlockInputs - 1) / Sparse24Int4Matrix.BlockInputs;
        int fullSuperblocks = usedBlocks / 2; // with an odd number of blocks the last superblock's second block is all padding: skipped
        var placeShifts = Vector512.Create(s_placeShifts);
        var slotBases = Vector512.Create(s_slotBases);
        var nibble = Vector512.Create((byte)15);
        float* scaleD = stackalloc float[16]; // scale·d of the superblock: rows 0–3 of its first block, then of its second

        for (int quartet = q0; quartet < q1; quartet++)
            for (int r = 0; r < job.N; r++)
            {
                byte* record = job.Stream + (long)quartet * superblocks * Sparse24Int4Matrix.RecordBytes;
                short* scales = job.Scales + (long)quartet * blocks * 4;
                byte* zeros = job.Zeros + (long)quartet * blocks * 4;
                sbyte* xq = job.Quantized + (long)r * w.PaddedIn;
                float* d = job.BlockScales + (long)r * blocks * 16;
                Vector512<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
                for (int s = 0; s < superblocks; s++, record += Sparse24Int4Matrix.RecordBytes, xq += 256, d += 16, scales += 8, zeros += 8)
                {
                    Prefetch(record + PrefetchBytes);
                    (HalfToSingle(Vector256.Load(scales)) * Vector512.Load(d)).Store(scaleD); // lanes 8–15: the next superblock's, unused
                    byte* places = record + Sparse24Int4Matrix.PositionsOffset;
                    var xLow = Vector512.Load(xq);
                    var xHigh = Vector512.Load(xq + 64);
                    acc0 = RowWholeBlock(Vector512.Load(record) & nibble, places, xLow, xHigh, zeros, scaleD, placeShifts, slotBases, acc0);
                    acc1 = RowWholeBlock(Vector512.Load(record + 64) & nibble, places + 32, xLow, xHigh, zeros + 1, scaleD + 1, placeShifts, slotBases, acc1);
                    acc2 = RowWholeBlock(Vector512.Load(record + 128) & nibble, places + 64, xLow, xHigh, zeros + 2, scaleD + 2, placeShifts, slotBases, acc2);
                    acc3 = RowWholeBlock(Vector512.Load(record + 192) & nibble, places + 96, xLow, xHigh, zeros + 3, scaleD + 3, placeShifts, slotBases, acc3);
                    if (s == fullSuperblocks) break;
                    xLow = Vector512.Load(xq + 128);
                    xHigh = Vector512.Load(xq + 192);
                    acc0 = RowWholeBlock(High(record), places + 16, xLow, xHigh, zeros + 4, scaleD + 4, placeShifts, slotBases, acc0);
                    acc1 = RowWholeBlock(High(record + 64), places + 48, xLow, xHigh, zeros + 5, scaleD + 5, placeShifts, slotBases, acc1);
                    acc2 = RowWholeBlock(High(record + 128), places + 80, xLow, xHigh, zeros + 6, scaleD + 6, placeShifts, slotBases, acc2);
                    acc3 = RowWholeBlock(High(record + 192), places + 112, xLow, xHigh, zeros + 7, scaleD + 7, placeShifts, slotBases, acc3);
                }
                StoreSums(job.Y + (long)r * w.OutDim, 4 * quartet, w.OutDim, acc0, acc1, acc2, acc3);
            }
    }

    /// <summary><see cref="Row"/> with the block's one zero and one scale·d broadcast from memory.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> RowWholeBlock(Vector512<byte> codes, byte* places, Vector512<sbyte> xLow, Vector512<sbyte> xHigh,
        byte* zero, float* scaleD, Vector512<byte> placeShifts, Vector512<byte> slotBases, Vector512<float> acc)
    {
        var fields = Avx512Vbmi.MultiShift(placeShifts, Avx512F.BroadcastVector128ToVector512((uint*)places).AsUInt64());
        var index = Avx512F.TernaryLogic(fields, Vector512.Create((byte)3), slotBases, 0xEA); // (fields & 3) | bases
        var xk = Avx512Vbmi.PermuteVar64x8x2(xLow, index.AsSByte(), xHigh);
        var pairs = Avx512BW.MultiplyAddAdjacent(codes, xk) - Avx512BW.MultiplyAddAdjacent(Vector512.Create(*zero), xk);
        var lanes = Avx512F.ConvertToVector512Single(Avx512BW.MultiplyAddAdjacent(pairs, Vector512.Create((short)1)));
        return Vector512.FusedMultiplyAdd(lanes, Vector512.Create(*scaleD), acc);
    }

    /// <summary>
    /// y[o .. o + 3] = the four horizontal sums (as many as there are rows): each vector folded to 128 bits, then two
    /// rounds of pairwise adds, ~15 instructions for four rows where four <c>Vector512.Sum</c> took ~100.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreSums(float* y, int o, int outDim, Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d)
    {
        var sums = Sse3.HorizontalAdd(Sse3.HorizontalAdd(Fold(a), Fold(b)), Sse3.HorizontalAdd(Fold(c), Fold(d)));
        if (o + 4 <= outDim) sums.Store(y + o);
        else
            for (int k = 0; o + k < outDim; k++) y[o + k] = sums.GetElement(k);

        static Vector128<float> Fold(Vector512<float> v)
        {
            var half = v.GetLower() + v.GetUpper();
            return half.GetLower() + half.GetUpper();
        }
    }

    /// <summary>
    /// How far ahead of the record being read the stream is prefetched into L2 (prefetcht1, as GptqInt8Gemv does). With
    /// the matrices streamed from DRAM (bench gemv24 --copies 8, four alternating runs, load average 8–9 from other jobs)
    /// the median speed over dense 4-bit went from 1.36× to 1.53× on 2048×8192 and from 1.21× to 1.31× on 8192×2048
    /// (one thread); from L3 it changed nothing measurable.
    /// </summary>
    private const int PrefetchBytes = 8192;

    /// <summary>The six cache lines of one quartet × superblock record, into L2.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Prefetch(byte* record)
    {
        Sse.Prefetch1(record); Sse.Prefetch1(record + 64); Sse.Prefetch1(record + 128);
        Sse.Prefetch1(record + 192); Sse.Prefetch1(record + 256); Sse.Prefetch1(record + 320);
    }

    /// <summary>
    /// The high nibble of each of 64 bytes, in one <c>vgf2p8affineqb</c> (shift and mask took two instructions): output
    /// bit i is the parity of x AND matrix byte 7 − i, so bytes 7..4 = 0x10, 0x20, 0x40, 0x80 copy bits 4..7 to bits 0..3.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<byte> High(byte* codes) =>
        Gfni.V512.GaloisFieldAffineTransform(Vector512.Load(codes), Vector512.Create(0x1020408000000000UL).AsByte(), 0);

    /// <summary>One row's block of 128 inputs: Σ over its 64 kept weights of (code − zero)·q, in 16 lanes of 4, times scale·d, added to <paramref name="acc"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Row(Vector512<byte> codes, byte* places, Vector512<sbyte> xLow, Vector512<sbyte> xHigh,
        Vector512<byte> zeros, Vector512<byte> zeroIndex, Vector512<float> scales, Vector512<int> scaleIndex,
        Vector512<byte> placeShifts, Vector512<byte> slotBases, Vector512<float> acc)
    {
        var fields = Avx512Vbmi.MultiShift(placeShifts, Avx512F.BroadcastVector128ToVector512((uint*)places).AsUInt64());
        var index = Avx512F.TernaryLogic(fields, Vector512.Create((byte)3), slotBases, 0xEA); // (fields & 3) | bases
        var xk = Avx512Vbmi.PermuteVar64x8x2(xLow, index.AsSByte(), xHigh);
        var zk = Avx512Vbmi.PermuteVar64x8(zeros, zeroIndex);
        var pairs = Avx512BW.MultiplyAddAdjacent(codes, xk) - Avx512BW.MultiplyAddAdjacent(zk, xk);
        var lanes = Avx512F.ConvertToVector512Single(Avx512BW.MultiplyAddAdjacent(pairs, Vector512.Create((short)1)));
        return Vector512.FusedMultiplyAdd(lanes, Avx512F.PermuteVar16x32(scales, scaleIndex), acc);
    }

    /// <summary>
    /// 16 float16 bit patterns (finite) to float: sign-extended to 32 bits and shifted left by 13, the sign lands in bit 31
    /// (bits 28–30 are copies of it, masked off), exponent and mantissa in float's places; the exponent field then reads
    /// 15 − 127 too low, and multiplying by 2^112 fixes it exactly, also for float16 subnormals (which become normal floats).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> HalfToSingle(Vector256<short> bits)
    {
        var shifted = Avx512F.ConvertToVector512Int32(bits) << 13;
        return (shifted & Vector512.Create(unchecked((int)0x8FFFE000))).AsSingle() * Vector512.Create(0x77800000).AsSingle(); // 2^112
    }

    // ---------------------------------------------------------------- portable decode

    private static void GemvPortable(Job job, int o0, int o1)
    {
        var w = job.W!;
        if (t_row is null || t_row.Length < w.InDim) t_row = GC.AllocateUninitializedArray<float>(w.InDim, pinned: true);
        fixed (float* row = t_row)
            for (int o = o0; o < o1; o++)
            {
                DecodeRowScalar(w, o, 0, w.InDim, row);
                for (int r = 0; r < job.N; r++)
                    job.Y[(long)r * w.OutDim + o] = System.Numerics.Tensors.TensorPrimitives.Dot(
                        new ReadOnlySpan<float>(job.X + (long)r * w.InDim, w.InDim), new ReadOnlySpan<float>(row, w.InDim));
            }
    }

    /// <summary>Inputs [k0, k0 + len) of row <paramref name="row"/> of Ŵ, from the kernel layout one kept weight at a time.</summary>
    private static void DecodeRowScalar(Sparse24Int4Matrix w, int row, int k0, int len, float* destination)
    {
        new Span<float>(destination, len).Clear();
        for (int k = k0 / 4; k < (k0 + len + 3) / 4; k++)
            for (int second = 0; second < 2; second++)
            {
                int slot = 2 * (k % 32) + second, i = 4 * k + w.KeptPlace(row, k / 32, slot);
                if (i < k0 || i >= k0 + len) continue;
                int g = i / w.GroupSize;
                destination[i - k0] = (w.KeptCode(row, k / 32, slot) - w.Zero(row, g)) * w.Scale(row, g);
            }
    }

    // ---------------------------------------------------------------- prompt: tiles decoded to float

    /// <summary>2·(p/4): the first slot of dense position p's quad (add 1 for the second), p in 0 .. 63.</summary>
    private static readonly byte[] s_firstSlots = Enumerable.Range(0, 64).Select(p => (byte)(2 * (p / 4))).ToArray();

    private static void DecodeRowVectorized(Job job, int row, int k0, int len, float* destination)
    {
        const int B = Sparse24Int4Matrix.BlockInputs;
        int b = k0 / B, at = k0 % B;
        float* block = stackalloc float[B];
        for (int done = 0; done < len;)
        {
            int take = Math.Min(B - at, len - done);
            if (at == 0 && take == B) DecodeBlock(job, row, b, destination + done);
            else
            {
                DecodeBlock(job, row, b, block);
                new Span<float>(block + at, take).CopyTo(new Span<float>(destination + done, take));
            }
            done += take;
            b++;
            at = 0;
        }
    }

    /// <summary>
    /// Block <paramref name="b"/> of a row as 128 floats, exactly Ŵ (<see cref="Sparse24Int4Matrix.Dequantize"/>): each
    /// input p of the block takes its quad's first or second kept code if the slot's place is p, else code 16; the codes
    /// then index a 32-float table, scale·(c − zero) for c &lt; 16 and 0 above (<c>vpermt2ps</c>). A block's P groups
    /// (<see cref="Sparse24Int4Matrix.GroupsPerBlock"/>) are consecutive entries of the scale and zero streams; padding
    /// groups have scale 0 there, so padding decodes to 0. (Reading each 16 inputs' scale and zero through the
    /// matrix's accessors, with their integer divisions, made decoding 8192×2048 take 12–14 ms.)
    /// </summary>
    private static void DecodeBlock(Job job, int row, int b, float* destination)
    {
        var w = job.W!;
        byte* record = job.Stream + w.CodesOffset(row, b / 2);
        var codes = b % 2 == 0 ? Vector512.Load(record) & Vector512.Create((byte)15) : High(record);
        var fields = Avx512Vbmi.MultiShift(Vector512.Create(s_placeShifts),
            Avx512F.BroadcastVector128ToVector512((uint*)(job.Stream + w.PositionsOffsetOf(row, b))).AsUInt64());
        var index = Avx512F.TernaryLogic(fields, Vector512.Create((byte)3), Vector512.Create(s_slotBases), 0xEA); // dense place of each slot
        var firstSlots = Vector512.Create(s_firstSlots);
        int perBlock = w.GroupsPerBlock, meta = (((row >> 2) * w.Blocks + b) * 4 + (row & 3)) * perBlock;
        int chunksPerGroup = 8 / perBlock; // 16-input chunks: 8 per block
        var table = Vector512<float>.Zero;
        for (int half = 0; half < 2; half++)
        {
            var first = firstSlots + Vector512.Create((byte)(32 * half));
            var second = first + Vector512<byte>.One;
            var place = Vector512<byte>.Indices + Vector512.Create((byte)(64 * half));
            var code = Vector512.ConditionalSelect(Vector512.Equals(Avx512Vbmi.PermuteVar64x8(index, first), place), Avx512Vbmi.PermuteVar64x8(codes, first),
                Vector512.ConditionalSelect(Vector512.Equals(Avx512Vbmi.PermuteVar64x8(index, second), place), Avx512Vbmi.PermuteVar64x8(codes, second),
                    Vector512.Create((byte)16)));
            for (int t = 0; t < 4; t++)
            {
                int chunk = 4 * half + t;
                if (chunk % chunksPerGroup == 0)
                {
                    int at = meta + chunk / chunksPerGroup;
                    float scale = Float16.Table[(ushort)job.Scales[at]];
                    table = (Vector512<float>.Indices - Vector512.Create((float)job.Zeros[at])) * Vector512.Create(scale);
                }
                var codes16 = Avx512F.ConvertToVector512Int32(Quarter(code, t));
                Avx512F.PermuteVar16x32x2(table, codes16, Vector512<float>.Zero).Store(destination + 16 * chunk);
            }
        }
    }

    /// <summary>Bytes 16·t .. 16·t + 15 of a vector (t is a constant once the loop is unrolled: one vextracti32x4).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<byte> Quarter(Vector512<byte> v, int t) => t switch
    {
        0 => v.GetLower().GetLower(),
        1 => v.GetLower().GetUpper(),
        2 => v.GetUpper().GetLower(),
        _ => v.GetUpper().GetUpper(),
    };

    // ---------------------------------------------------------------- references

    /// <summary>
    /// The plain definition, y[r, o] = Σ x[r, i]·Ŵ[o, i] over the kept weights, walking the canonical tensors
    /// (<see cref="Sparse24Int4Matrix.ToTensors"/>) and accumulating in double: what the fast paths are tested against.
    /// </summary>
    public static void MultiplyReference(Sparse24Int4Matrix w, ReadOnlySpan<float> x, Span<float> y, int n)
    {
        MatMulShapes.Check(x.Length, y.Length, n, w.InDim, w.OutDim);
        var t = w.ToTensors();
        int quads = w.InDim / 4;
        for (int r = 0; r < n; r++)
            for (int o = 0; o < w.OutDim; o++)
            {
                double sum = 0;
                for (int k = 0; k < quads; k++)
                {
                    int codes = t.Codes[o * quads + k], places = t.Positions[o * (w.InDim / 8) + k / 2] >> (4 * (k % 2));
                    for (int second = 0; second < 2; second++)
                    {
                        int i = 4 * k + (places >> (2 * second) & 3), g = i / w.GroupSize;
                        float weight = ((codes >> (4 * second) & 15) - t.Zeros[g * w.OutDim + o]) * (float)t.Scales[g * w.OutDim + o];
                        sum += (double)x[r * w.InDim + i] * weight;
                    }
                }
                y[r * w.OutDim + o] = (float)sum;
            }
    }

    /// <summary>
    /// The integer decode written plainly: the same pieces and activation rounding (<see cref="QuantizeActivations.Reference"/>),
    /// exact integer Σ (code − zero)·q per piece, each times the float scale·d, combined in double.
    /// <paramref name="magnitude"/>[r·out + o] receives Σ |scale·d·(code − zero)·q| over the kept weights, the scale of the
    /// kernel's float rounding.
    /// </summary>
    internal static void ReferenceInt8(Sparse24Int4Matrix w, ReadOnlySpan<float> x, Span<float> y, Span<double> magnitude, int n)
    {
        var (codes, keep) = w.Unpack();
        int piece = Math.Min(w.GroupSize, Sparse24Int4Matrix.BlockInputs), pieces = (w.InDim + piece - 1) / piece;
        var q = new sbyte[pieces * piece];
        var d = new float[pieces];
        for (int r = 0; r < n; r++)
        {
            var padded = new float[pieces * piece];
            x.Slice(r * w.InDim, w.InDim).CopyTo(padded);
            for (int p = 0; p < pieces; p++) d[p] = QuantizeActivations.Reference(padded.AsSpan(p * piece, piece), q.AsSpan(p * piece, piece));
            for (int o = 0; o < w.OutDim; o++)
            {
                double total = 0, size = 0;
                for (int p = 0; p < pieces; p++)
                {
                    int g = p * piece / w.GroupSize;
                    float scaleD = w.Scale(o, g) * d[p];
                    long dot = 0, absolute = 0;
                    for (int i = p * piece; i < Math.Min((p + 1) * piece, w.InDim); i++)
                    {
                        if (!keep[o * w.InDim + i]) continue;
                        long term = (codes[o * w.InDim + i] - w.Zero(o, g)) * q[i];
                        dot += term;
                        absolute += Math.Abs(term);
                    }
                    total += (double)scaleD * dot;
                    size += Math.Abs((double)scaleD) * absolute;
                }
                y[r * w.OutDim + o] = (float)total;
                magnitude[r * w.OutDim + o] = size;
            }
        }
    }
}
