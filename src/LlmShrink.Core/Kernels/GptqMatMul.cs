using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LlmShrink.Kernels;

/// <summary>
/// y[n, out] = x[n, in]·Ŵᵀ for a group-quantized weight (GPTQ, arXiv:2210.17323):
/// Ŵ[o, i] = scale[g, o]·(code[i, o] − zero[g, o]) with g = g_idx[i].
/// <para>
/// At construction the codes are repacked into a layout made for the kernel. The input axis is reordered so that
/// each group's inputs are contiguous (act_order checkpoints scatter a group over the whole row); each group is
/// padded with zero codes to a multiple of 16, and x is gathered into the same order once per call, so the
/// permutation costs O(in) per row of x instead of touching the weights. Sixteen consecutive inputs form a
/// <em>step</em>. Codes of 2 bits are stored 16 to a 32-bit word: word lane l of a 64-byte vector holds step k's
/// input l in bits 2k..2k+1. Codes of 3 and 4 bits are stored as nibbles, 128 inputs to a 64-byte block: byte j holds
/// input j in its low nibble and input 64 + j in its high nibble, so one load, a mask and a shift give 128
/// consecutive codes as bytes; the blocks of four consecutive rows are interleaved (block b of rows 4r .. 4r + 3 is 256
/// contiguous bytes), so decode, which walks four rows at once, reads one sequential stream. Codes of 8 bits are one per byte.
/// </para>
/// <para>
/// Decode (n = 1) streams the packed codes once and never expands them in memory. For nibbles it runs in integers
/// (GptqInt8Gemv.cs): x is quantized to int8 and each group's dot product is a <c>vpmaddubsw</c> of code bytes with
/// x bytes, so the result is the dequantized product of a slightly rounded x. For 2 bits a group's 4 possible weight values scale·(c − zero) form
/// a 16-float table, so <c>vpermps</c> with the word as index turns 16 codes into 16 floats in one instruction (it
/// reads only the low bits of each lane; shifting the word exposes the next step), followed by float FMAs; 8-bit codes
/// are widened to float. These two equal the dequantized matrix product up to float rounding.
/// Prompt (n &gt; 1) is arithmetic-bound. Nibble layers whose 128-input blocks are whole groups run it on int8
/// activations like decode, 8 rows re-laid so that one lane is one row (GptqInt8Gemm.cs); the others run on the float
/// GEMM core (<see cref="TiledGemm"/>): a tile of weight rows is dequantized once into a per-worker buffer and then meets
/// every x row in <see cref="MatMul"/>'s register-blocked micro-kernel, at F32 GEMM speed.
/// </para>
/// </summary>
public sealed unsafe partial class GptqMatMul
{
    public int Bits { get; }
    public int InDim { get; }
    public int OutDim { get; }
    public int Groups { get; }

    /// <summary>Bits each code occupies in the repacked layout: 2, 4 (3-bit codes are stored as nibbles), or 8.</summary>
    private readonly int _storageBits;
    /// <summary>Length of the reordered, padded input axis (a multiple of 16 codes per lane × 16 lanes).</summary>
    private readonly int _paddedIn;
    private readonly int _rowBytes;
    private readonly byte[] _codes;      // [out, rowBytes] (nibble blocks interleaved by row quartets), pinned
    private readonly float[] _scales;    // [out, groups]
    private readonly float[] _zeros;     // [out, groups]
    /// <summary>Reordered position → original input index, or −1 for padding.</summary>
    private readonly int[] _gather;
    private readonly bool _identityOrder;
    /// <summary>Runs of steps that share a group: steps [RunStart[r], RunStart[r + 1]) belong to group RunGroup[r].</summary>
    private readonly int[] _runStart, _runGroup;
    /// <summary>The group of each step of 16 reordered inputs, −1 for the padding steps after the last run.</summary>
    private readonly int[] _stepGroup;

    /// <summary>
    /// From unpacked codes: <paramref name="codes"/> [out, in] one code per byte (0 .. 2^bits − 1),
    /// <paramref name="scales"/> and <paramref name="zeros"/> [groups, out] (integer zero-points, as in Ŵ above),
    /// <paramref name="groupIndex"/> [in] the group of each input (g_idx).
    /// </summary>
    public GptqMatMul(int bits, int inDim, int outDim, ReadOnlySpan<byte> codes, ReadOnlySpan<float> scales, ReadOnlySpan<int> zeros, ReadOnlySpan<int> groupIndex)
    {
        if (bits is not (2 or 3 or 4 or 8)) throw new ArgumentException($"{bits}-bit codes are not supported (2, 3, 4, 8)", nameof(bits));
        if (inDim <= 0 || outDim <= 0) throw new ArgumentException("dimensions must be positive");
        if (codes.Length != (long)inDim * outDim) throw new ArgumentException($"codes has {codes.Length} entries, expected {outDim}×{inDim}", nameof(codes));
        if (groupIndex.Length != inDim) throw new ArgumentException($"g_idx has {groupIndex.Length} entries, expected {inDim}", nameof(groupIndex));
        if (scales.Length == 0 || scales.Length % outDim != 0) throw new ArgumentException($"scales has {scales.Length} entries, not groups×{outDim}", nameof(scales));
        if (zeros.Length != scales.Length) throw new ArgumentException("zeros and scales differ in size", nameof(zeros));
        Bits = bits; InDim = inDim; OutDim = outDim;
        Groups = scales.Length / outDim;
        _storageBits = bits == 3 ? 4 : bits;

        // Group sizes, then each group's slot in the reordered axis, padded to whole steps of 16.
        var count = new int[Groups];
        foreach (int g in groupIndex)
        {
            if ((uint)g >= (uint)Groups) throw new ArgumentException($"g_idx holds group {g}, outside [0, {Groups})", nameof(groupIndex));
            count[g]++;
        }
        var slot = new int[Groups];
        var runStart = new List<int>();
        var runGroup = new List<int>();
        int steps = 0;
        for (int g = 0; g < Groups; g++)
        {
            if (count[g] == 0) continue;
            slot[g] = 16 * steps;
            runStart.Add(steps);
            runGroup.Add(g);
            steps += (count[g] + 15) / 16;
        }
        int stepsPerBlock = StepsPerBlock(_storageBits);
        steps = (steps + stepsPerBlock - 1) / stepsPerBlock * stepsPerBlock; // whole 64-byte blocks
        runStart.Add(steps);
        _runStart = runStart.ToArray();
        _runGroup = runGroup.ToArray();
        _paddedIn = 16 * steps;
        _stepGroup = new int[steps];
        Array.Fill(_stepGroup, -1);
        for (int r = 0; r < _runGroup.Length; r++) _stepGroup.AsSpan(_runStart[r], _runStart[r + 1] - _runStart[r]).Fill(_runGroup[r]);
        _rowBytes = _paddedIn * _storageBits / 8;
        (_pieceGroup, _pieceStep, _pieceSteps, _blockPieces, _pieceMasks) = Pieces(_storageBits, _stepGroup);
        _wholeBlocks = _storageBits == 4 && _pieceGroup.Length == _paddedIn / 128 && _pieceSteps.All(steps => steps == 8);

        _gather = new int[_paddedIn];
        Array.Fill(_gather, -1);
        var fill = (int[])slot.Clone();
        for (int i = 0; i < inDim; i++) _gather[fill[groupIndex[i]]++] = i;
        _identityOrder = _paddedIn == inDim;
        for (int p = 0; p < inDim && _identityOrder; p++) _identityOrder = _gather[p] == p;

        _scales = new float[outDim * Groups];
        _zeros = new float[outDim * Groups];
        for (int g = 0; g < Groups; g++)
            for (int o = 0; o < outDim; o++)
            {
                _scales[o * Groups + g] = scales[g * outDim + o];
                _zeros[o * Groups + g] = zeros[g * outDim + o];
            }

        int storedRows = _storageBits == 4 ? (outDim + 3) / 4 * 4 : outDim; // nibble rows come in whole quartets
        _codes = GC.AllocateArray<byte>(checked(storedRows * _rowBytes), pinned: true);
        int maxCode = (1 << bits) - 1;
        for (int o = 0; o < outDim; o++)
        {
            var row = codes.Slice(o * inDim, inDim);
            var packed = _codes.AsSpan((int)RowOffset(o));
            if (_storageBits == 4 && _identityOrder && StoreNibblesInOrder(row, packed, maxCode)) continue;
            for (int p = 0; p < _paddedIn; p++)
            {
                int i = _gather[p];
                if (i < 0) continue;
                int code = row[i];
                if (code > maxCode) throw new ArgumentException($"code {code} at [{o}, {i}] does not fit in {bits} bits", nameof(codes));
                Store(packed, p, code);
            }
        }
    }

    /// <summary>
    /// What the <see cref="Store"/> loop writes for a nibble row whose inputs keep their order (no act-order, whole
    /// blocks), 64 bytes at a time: byte b of block k is input 128k + b | input 128k + 64 + b &lt;&lt; 4. Building a 4-bit
    /// Llama-3.2-1B shape spent 5 of its 9.3 s in this constructor, most of them in that loop. False if a code does not
    /// fit: the loop then runs and throws, naming it.
    /// </summary>
    private static bool StoreNibblesInOrder(ReadOnlySpan<byte> row, Span<byte> packed, int maxCode)
    {
        if (!Vector512.IsHardwareAccelerated) return false;
        var limit = Vector512.Create((byte)maxCode);
        for (int k = 0; k < row.Length / 128; k++)
        {
            var low = Vector512.Create(row.Slice(128 * k, 64));
            var high = Vector512.Create(row.Slice(128 * k + 64, 64));
            if (Vector512.GreaterThanAny(Vector512.Max(low, high), limit)) return false;
            (low | Vector512.ShiftLeft(high, 4)).CopyTo(packed.Slice(k * NibbleBlockStride, 64));
        }
        return true;
    }

    /// <summary>Bytes between a 64-byte block of nibble codes and the same row's next block: four rows' blocks are interleaved.</summary>
    private const int NibbleBlockStride = 4 * 64;

    /// <summary>Where row <paramref name="row"/>'s codes start in the packed layout (its first block, for nibbles).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private long RowOffset(int row) => _storageBits == 4 ? (long)(row & ~3) * _rowBytes + (row & 3) * 64 : (long)row * _rowBytes;

    /// <summary>Steps (of 16 inputs) that share one 64-byte block of codes.</summary>
    private static int StepsPerBlock(int storageBits) => 32 / storageBits;

    /// <summary>Byte offset from the row's start (<see cref="RowOffset"/>), and the shift of the nibble, of reordered input p (3- and 4-bit codes).</summary>
    private static (int Byte, int Shift) NibblePlace(int p) => (p / 128 * NibbleBlockStride + p % 64, p % 128 / 64 * 4);

    /// <summary>Writes the code of reordered input p into its place in a packed row (layout in the class summary).</summary>
    private void Store(Span<byte> packed, int p, int code)
    {
        if (_storageBits == 8)
        {
            packed[p] = (byte)code;
            return;
        }
        if (_storageBits == 4)
        {
            (int at, int nibbleShift) = NibblePlace(p);
            packed[at] |= (byte)(code << nibbleShift);
            return;
        }
        int step = p / 16, lane = p % 16;
        int word = step / 16 * 16 + lane;
        ref uint target = ref Unsafe.As<byte, uint>(ref packed[4 * word]);
        target |= (uint)code << (step % 16 * 2);
    }

    /// <summary>
    /// From the GPTQ v1 checkpoint tensors (AutoGPTQ layout): <paramref name="qweight"/> [in·bits/32, out] packs 32/bits
    /// codes of consecutive inputs per int32 (lowest bits first); <paramref name="qzeros"/> [groups, out·bits/32] packs
    /// zero − 1 the same way along the output axis; <paramref name="scales"/> [groups, out]; <paramref name="groupIndex"/> [in].
    /// </summary>
    public static GptqMatMul FromGptqV1(int bits, int inDim, int outDim, ReadOnlySpan<int> qweight, ReadOnlySpan<int> qzeros, ReadOnlySpan<Half> scales, ReadOnlySpan<int> groupIndex)
    {
        if (bits is not (2 or 4 or 8)) throw new ArgumentException($"GPTQ v1 packing of {bits}-bit codes is not supported (2, 4, 8)", nameof(bits));
        int perWord = 32 / bits, mask = (1 << bits) - 1;
        if (inDim % perWord != 0 || outDim % perWord != 0) throw new ArgumentException($"in ({inDim}) and out ({outDim}) must be multiples of {perWord}");
        if (qweight.Length != (long)inDim / perWord * outDim) throw new ArgumentException($"qweight has {qweight.Length} words, expected {inDim / perWord}×{outDim}", nameof(qweight));
        if (scales.Length == 0 || scales.Length % outDim != 0) throw new ArgumentException($"scales has {scales.Length} entries, not groups×{outDim}", nameof(scales));
        int groups = scales.Length / outDim;
        if (qzeros.Length != (long)groups * (outDim / perWord)) throw new ArgumentException($"qzeros has {qzeros.Length} words, expected {groups}×{outDim / perWord}", nameof(qzeros));

        var codes = new byte[(long)outDim * inDim];
        for (int i = 0; i < inDim; i++)
        {
            int shift = i % perWord * bits;
            var words = qweight.Slice(i / perWord * outDim, outDim);
            for (int o = 0; o < outDim; o++) codes[(long)o * inDim + i] = (byte)((words[o] >>> shift) & mask);
        }
        var zeros = new int[groups * outDim];
        var floatScales = new float[groups * outDim];
        for (int g = 0; g < groups; g++)
            for (int o = 0; o < outDim; o++)
            {
                zeros[g * outDim + o] = ((qzeros[g * (outDim / perWord) + o / perWord] >>> (o % perWord * bits)) & mask) + 1;
                floatScales[g * outDim + o] = (float)scales[g * outDim + o];
            }
        return new GptqMatMul(bits, inDim, outDim, codes, floatScales, zeros, groupIndex);
    }

    /// <summary>g_idx without act_order: input i belongs to group i / groupSize.</summary>
    public static int[] SequentialGroups(int inDim, int groupSize)
    {
        var g = new int[inDim];
        for (int i = 0; i < inDim; i++) g[i] = i / groupSize;
        return g;
    }

    /// <summary>Bytes of the repacked codes plus scales and zeros: the memory this layer streams per token.</summary>
    public long WeightBytes => _codes.LongLength + 4L * (_scales.Length + _zeros.Length);

    /// <summary>Whether the AVX-512 kernels run (tests switch them off to check the portable path).</summary>
    internal bool Vectorized { get; set; } = Avx512F.IsSupported;

    [ThreadStatic] private static float[]? t_gathered, t_row, t_pieceScales, t_groupSums;
    [ThreadStatic] private static sbyte[]? t_quantized;
    [ThreadStatic] private static Job? t_job;

    public void Multiply(ReadOnlySpan<float> x, Span<float> y, int n, WorkerPool? pool = null, int threads = 0)
    {
        if (n < 0) throw new ArgumentOutOfRangeException(nameof(n));
        MatMulShapes.Check(x.Length, y.Length, n, InDim, OutDim);
        if (n == 0) return;
        pool ??= WorkerPool.Shared;

        // x in the reordered, padded input order.
        ReadOnlySpan<float> xs = x[..(n * InDim)];
        if (!_identityOrder)
        {
            int needed = n * _paddedIn;
            if (t_gathered is null || t_gathered.Length < needed) t_gathered = GC.AllocateUninitializedArray<float>(needed, pinned: true);
            for (int r = 0; r < n; r++)
            {
                var src = x.Slice(r * InDim, InDim);
                var dst = t_gathered.AsSpan(r * _paddedIn, _paddedIn);
                for (int p = 0; p < dst.Length; p++) dst[p] = _gather[p] < 0 ? 0 : src[_gather[p]];
            }
            xs = t_gathered.AsSpan(0, needed);
        }

        fixed (float* px = xs, py = y)
        fixed (byte* codes = _codes)
        fixed (float* scales = _scales, zeros = _zeros)
        fixed (int* runStart = _runStart, runGroup = _runGroup)
        {
            var job = t_job ??= new Job();
            job.Owner = this; job.X = px; job.Y = py; job.N = n;
            job.Codes = codes; job.Scales = scales; job.Zeros = zeros; job.RunStart = runStart; job.RunGroup = runGroup;
            if (n == 1 && IntegerDecode)
            {
                // x to int8 once per call, on this thread; the workers only read it.
                if (t_quantized is null || t_quantized.Length < _paddedIn) t_quantized = GC.AllocateUninitializedArray<sbyte>(_paddedIn, pinned: true);
                if (t_pieceScales is null || t_pieceScales.Length < _pieceGroup.Length) t_pieceScales = GC.AllocateUninitializedArray<float>(_pieceGroup.Length, pinned: true);
                if (t_groupSums is null || t_groupSums.Length < Groups) t_groupSums = GC.AllocateUninitializedArray<float>(Groups, pinned: true);
                fixed (sbyte* quantized = t_quantized)
                fixed (float* pieceScales = t_pieceScales, groupSums = t_groupSums)
                {
                    QuantizeX(px, quantized, pieceScales, groupSums);
                    job.Quantized = quantized; job.PieceScales = pieceScales; job.GroupSums = groupSums;
                    pool.For((OutDim + DecodeItemRows - 1) / DecodeItemRows, job, threads);
                    job.Quantized = null; job.PieceScales = job.GroupSums = null;
                }
            }
            else if (n == 1) pool.For((OutDim + DecodeItemRows - 1) / DecodeItemRows, job, threads);
            else if (IntegerPrompt) MultiplyPrompt(px, py, n, codes, scales, zeros, pool, threads);
            else TiledGemm.Multiply(job, px, py, n, _paddedIn, OutDim, pool, threads); // slices start on whole steps
            job.Owner = null; job.X = job.Y = null; job.Codes = null; job.Scales = job.Zeros = null; job.RunStart = job.RunGroup = null;
        }
    }

    private const int DecodeItemRows = 16;

    private sealed class Job : IParallelWork, IRowDecoder
    {
        public GptqMatMul? Owner;
        public float* X, Y, Scales, Zeros;
        /// <summary>Decode through int8 (nibble codes only): x quantized per piece, each piece's scale d, and per group Σ d·Σq.</summary>
        public sbyte* Quantized;
        public float* PieceScales, GroupSums;
        public byte* Codes;
        public int* RunStart, RunGroup;
        public int N;

        public void Execute(int begin, int end, int worker)
        {
            int o0 = begin * DecodeItemRows, o1 = Math.Min(end * DecodeItemRows, Owner!.OutDim);
            if (Quantized != null) Owner.GemvInt8(this, o0, o1);
            else Owner.Gemv(this, X, Y, o0, o1);
        }

        public void DecodeRow(int row, int k0, int len, float* destination) => Owner!.DecodeSteps(this, row, k0 / 16, (k0 + len) / 16, destination);
    }

    private void Gemv(Job job, float* x, float* y, int o0, int o1)
    {
        if (!Vectorized || _storageBits == 4)
        {
            // Without AVX-512 (or nibbles without AVX-512 BW): dequantize each row and take the dot product.
            if (t_row is null || t_row.Length < _paddedIn) t_row = GC.AllocateUninitializedArray<float>(_paddedIn, pinned: true);
            var xs = new ReadOnlySpan<float>(x, _paddedIn);
            fixed (float* decoded = t_row)
                for (int o = o0; o < o1; o++)
                {
                    DecodeSteps(job, o, 0, _paddedIn / 16, decoded);
                    y[o] = System.Numerics.Tensors.TensorPrimitives.Dot(xs, t_row.AsSpan(0, _paddedIn));
                }
            return;
        }
        // Two rows at a time: two independent FMA chains sharing each x load. An odd last row is paired with itself.
        for (int o = o0; o < o1; o += 2)
        {
            int second = Math.Min(o + 1, o1 - 1);
            (float a, float b) = _storageBits == 8 ? Dot2Bytes(job, x, o, second) : Dot2Packed(job, x, o, second);
            y[o] = a;
            y[second] = b;
        }
    }

    /// <summary>The table of a group's weight values: entry j = scale·((j mod 2^storageBits) − zero), as <see cref="Reference"/> rounds them.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Vector512<float> Table(Job job, int row, int group)
    {
        var codes = _storageBits == 2 ? Vector512.Create(0f, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3)
                                      : Vector512.Create(0f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        int k = row * Groups + group;
        return (codes - Vector512.Create(job.Zeros[k])) * Vector512.Create(job.Scales[k]);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private (float, float) Dot2Packed(Job job, float* x, int rowA, int rowB)
    {
        // 2-bit codes (nibbles take the int8 path): 16 steps per word.
        var wordsA = (uint*)(job.Codes + RowOffset(rowA));
        var wordsB = (uint*)(job.Codes + RowOffset(rowB));
        Vector512<float> accA = default, accB = default;
        Vector512<uint> a = default, b = default;
        for (int r = 0; r < _runGroup.Length; r++)
        {
            var tableA = Table(job, rowA, job.RunGroup[r]);
            var tableB = Table(job, rowB, job.RunGroup[r]);
            for (int step = job.RunStart[r]; step < job.RunStart[r + 1]; step++)
            {
                if ((step & 15) == 0)
                {
                    a = Vector512.Load(wordsA + step);
                    b = Vector512.Load(wordsB + step);
                }
                else
                {
                    a >>>= 2;
                    b >>>= 2;
                }
                var xv = Vector512.Load(x + 16 * step);
                accA = Vector512.FusedMultiplyAdd(xv, Avx512F.PermuteVar16x32(tableA, a.AsInt32()), accA);
                accB = Vector512.FusedMultiplyAdd(xv, Avx512F.PermuteVar16x32(tableB, b.AsInt32()), accB);
            }
        }
        // Padding steps after the last run carry zero codes against zero x: nothing to add.
        return (Vector512.Sum(accA), Vector512.Sum(accB));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private (float, float) Dot2Bytes(Job job, float* x, int rowA, int rowB)
    {
        byte* codesA = job.Codes + RowOffset(rowA), codesB = job.Codes + RowOffset(rowB);
        Vector512<float> accA = default, accB = default;
        for (int r = 0; r < _runGroup.Length; r++)
        {
            int g = job.RunGroup[r];
            var zeroA = Vector512.Create(job.Zeros[rowA * Groups + g]); var scaleA = Vector512.Create(job.Scales[rowA * Groups + g]);
            var zeroB = Vector512.Create(job.Zeros[rowB * Groups + g]); var scaleB = Vector512.Create(job.Scales[rowB * Groups + g]);
            for (int p = 16 * job.RunStart[r]; p < 16 * job.RunStart[r + 1]; p += 16)
            {
                var xv = Vector512.Load(x + p);
                var qa = Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(codesA + p)));
                var qb = Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(codesB + p)));
                accA = Vector512.FusedMultiplyAdd(xv, (qa - zeroA) * scaleA, accA);
                accB = Vector512.FusedMultiplyAdd(xv, (qb - zeroB) * scaleB, accB);
            }
        }
        return (Vector512.Sum(accA), Vector512.Sum(accB));
    }

    /// <summary>
    /// Steps [<paramref name="s0"/>, <paramref name="s1"/>) of row <paramref name="row"/> of Ŵ in the reordered, padded
    /// input order, written from <paramref name="destination"/>[0] on (padding decodes to whatever; x is 0 there).
    /// </summary>
    private void DecodeSteps(Job job, int row, int s0, int s1, float* destination)
    {
        byte* packed = job.Codes + RowOffset(row);
        int mask = (1 << _storageBits) - 1;
        int group = -1;
        Vector512<float> table = default, zero = default, scale = default;
        for (int step = s0; step < s1; step++)
        {
            float* d = destination + 16 * (step - s0);
            int g = _stepGroup[step];
            if (g < 0)
            {
                new Span<float>(d, 16).Clear();
                continue;
            }
            int k = row * Groups + g;
            if (!Vectorized)
            {
                for (int lane = 0; lane < 16; lane++)
                    d[lane] = (Code(packed, 16 * step + lane) - job.Zeros[k]) * job.Scales[k];
                continue;
            }
            if (g != group)
            {
                group = g;
                if (_storageBits == 8) { zero = Vector512.Create(job.Zeros[k]); scale = Vector512.Create(job.Scales[k]); }
                else table = Table(job, row, g);
            }
            if (_storageBits == 8)
            {
                var q = Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(packed + 16 * step)));
                ((q - zero) * scale).Store(d);
            }
            else if (_storageBits == 4)
            {
                // Step s of a block: bytes 16·(s mod 4) .. +15 of the block, low nibbles for s < 4, high ones after.
                (int at, int nibbleShift) = NibblePlace(16 * step);
                var bytes = Vector128.Load(packed + at).AsUInt16() >>> nibbleShift;
                var codes = Avx512F.ConvertToVector512Int32(bytes.AsByte() & Vector128.Create((byte)15));
                Avx512F.PermuteVar16x32(table, codes).Store(d);
            }
            else
            {
                var word = Vector512.Load((uint*)packed + (step >> 4) * 16);
                Avx512F.PermuteVar16x32(table, (word >>> ((step & 15) * 2)).AsInt32()).Store(d);
            }
        }
    }

    /// <summary>The code of reordered input p in a packed row, read one at a time (portable path and reference).</summary>
    private int Code(byte* packed, int p)
    {
        switch (_storageBits)
        {
            case 8: return packed[p];
            case 4:
                (int at, int nibbleShift) = NibblePlace(p);
                return packed[at] >> nibbleShift & 15;
            default:
                int step = p / 16;
                return (int)(((uint*)packed)[step / 16 * 16 + p % 16] >> (step % 16 * 2)) & 3;
        }
    }

    /// <summary>The plain definition over unpacked codes (layout as the constructor's), accumulated in double.</summary>
    public static void Reference(int inDim, int outDim, ReadOnlySpan<byte> codes, ReadOnlySpan<float> scales, ReadOnlySpan<int> zeros,
        ReadOnlySpan<int> groupIndex, ReadOnlySpan<float> x, Span<float> y, int n)
    {
        for (int r = 0; r < n; r++)
            for (int o = 0; o < outDim; o++)
            {
                double sum = 0;
                for (int i = 0; i < inDim; i++)
                {
                    int g = groupIndex[i];
                    float w = (codes[o * inDim + i] - zeros[g * outDim + o]) * scales[g * outDim + o];
                    sum += (double)x[r * inDim + i] * w;
                }
                y[r * outDim + o] = (float)sum;
            }
    }
}
