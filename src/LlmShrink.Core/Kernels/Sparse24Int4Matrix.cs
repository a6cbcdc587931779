namespace LlmShrink.Kernels;

/// <summary>
/// A weight matrix W[out, in] that is 2:4 sparse and 4-bit group-quantized: in every four consecutive inputs of a row
/// (a <em>quad</em>) exactly two weights are kept (the 2:4 pattern sparse tensor cores run, arXiv:2104.08378), and each
/// kept weight is Ŵ[o, i] = scale[g, o]·(code − zero[g, o]) with g = i / groupSize (the GPTQ grid without act-order).
/// A row stores only its kept codes (two nibbles per quad) and where they sit inside their quad (two 2-bit indices per
/// quad): 12 bits per 4 weights, 3 bits per weight before scales, against 4 for dense 4-bit codes.
/// <para>
/// <b>Canonical tensors</b> (<see cref="ToTensors"/> / <see cref="FromTensors"/>: the row-major layout a checkpoint stores):
/// <list type="bullet">
/// <item><c>codes</c> uint8 [out, in/4]: byte k of row o is quad k (inputs 4k .. 4k + 3); low nibble = code of the first
/// kept weight (lower input), high nibble = code of the second.</item>
/// <item><c>positions</c> uint8 [out, in/8]: quad k of row o is the nibble (k mod 2)·4 of byte k/2; its bits 0–1 are the
/// first kept weight's place p0 in the quad, bits 2–3 the second's p1, p0 &lt; p1 (so the kept inputs are 4k + p0, 4k + p1).</item>
/// <item><c>scales</c> float16 [groups, out] and <c>zeros</c> uint8 [groups, out] (0 .. 16), groups = ⌈in / groupSize⌉.</item>
/// </list>
/// </para>
/// <para>
/// <b>Kernel layout</b> (what the object keeps; <see cref="Sparse24MatMul"/> streams it). Decode reads every stored byte
/// once per token, so the layout is one sequential stream per four rows, like GptqMatMul's interleaved quartets (a
/// pure read of one interleaved stream ran 29–33 GB/s against 16–25 GB/s for four row streams, docs/BENCHMARKS.md).
/// The input axis is padded with pruned zero-code quads to a multiple of 256 (a <em>superblock</em>: two
/// <em>blocks</em> of 128 inputs, 64 kept weights each); rows are padded to whole quartets. Slot j (0 .. 63) of a
/// block is its j-th kept weight in input order (quad j/2, first if j is even). Per quartet and superblock, 384 bytes:
/// <list type="bullet">
/// <item>bytes 0 .. 255: row r's 64 code bytes at 64r; byte j holds slot j of the first block in its low nibble and slot j
/// of the second block in its high nibble, so one 64-byte load and a mask or shift give 64 codes as bytes.</item>
/// <item>bytes 256 .. 383: row r's positions at 256 + 32r, 16 bytes per block; slot j's 2-bit place sits at field
/// <see cref="PositionField"/>(j) of the 128-bit string, the order in which one <c>vpmultishiftqb</c> of the 16 bytes
/// broadcast to all four 128-bit lanes puts slot j's field in the low bits of byte j.</item>
/// </list>
/// Scales (float16 bits) and zeros (bytes) are two more sequential streams: per quartet and block, 4·P entries, entry
/// r·P + h for row r and the block's h-th group (P = 128 / groupSize groups per block for groups of 32 and 64, P = 1 for
/// groups of 128 inputs or more). With 128-input groups a row reads 32 + 16 + 2 + 1 = 51 bytes per 128 inputs, against
/// GptqMatMul's 64 + 4 + 4 = 72.
/// </para>
/// </summary>
public sealed class Sparse24Int4Matrix
{
    public int InDim { get; }
    public int OutDim { get; }
    public int GroupSize { get; }
    public int Groups { get; }

    /// <summary>The canonical tensors (layout in the class summary).</summary>
    public sealed record Tensors(byte[] Codes, byte[] Positions, Half[] Scales, byte[] Zeros);

    internal const int BlockInputs = 128;
    internal const int SuperblockInputs = 256;
    /// <summary>Bytes of one quartet of rows × one superblock: 4 × 64 code bytes, then 4 × 2 × 16 position bytes.</summary>
    internal const int RecordBytes = 384;
    internal const int PositionsOffset = 256;
    /// <summary>The largest zero-point: GPTQ v1 checkpoints store zero − 1 in 4 bits (1 .. 16), other 4-bit grids use 0 .. 15.</summary>
    public const int MaxZero = 16;

    /// <summary>Input axis padded to whole superblocks.</summary>
    internal int PaddedIn { get; }
    internal int Blocks => PaddedIn / BlockInputs;
    internal int Superblocks => PaddedIn / SuperblockInputs;
    internal int Quartets => (OutDim + 3) / 4;
    /// <summary>Groups per block in the scale and zero streams: 4 (groups of 32), 2 (64) or 1 (128 and more).</summary>
    internal int GroupsPerBlock { get; }

    /// <summary>Codes and positions, [quartet][superblock][384 bytes], pinned.</summary>
    internal readonly byte[] Stream;
    /// <summary>float16 bits of the scales, [quartet][block][row·P + h], pinned, 16 entries of slack for whole-vector loads.</summary>
    internal readonly ushort[] ScaleStream;
    /// <summary>Zero-points, [quartet][block][row·P + h], pinned, 16 entries of slack.</summary>
    internal readonly byte[] ZeroStream;

    private const int Slack = 16;

    /// <summary>
    /// From unpacked data: <paramref name="codes"/> [out, in] one code per byte (only kept ones are read; they must be
    /// 0 .. 15), <paramref name="keep"/> [out, in] with exactly two kept in every quad, <paramref name="scales"/> [groups, out]
    /// (each exactly representable in float16), <paramref name="zeros"/> [groups, out] (0 .. <see cref="MaxZero"/>).
    /// </summary>
    public Sparse24Int4Matrix(int inDim, int outDim, int groupSize, ReadOnlySpan<byte> codes, ReadOnlySpan<bool> keep,
        ReadOnlySpan<float> scales, ReadOnlySpan<int> zeros)
        : this(inDim, outDim, groupSize)
    {
        long weights = (long)inDim * outDim;
        if (codes.Length != weights) throw new ArgumentException($"codes has {codes.Length} entries, expected {outDim}×{inDim}", nameof(codes));
        if (keep.Length != weights) throw new ArgumentException($"keep has {keep.Length} entries, expected {outDim}×{inDim}", nameof(keep));
        CheckLength(scales.Length, nameof(scales));
        CheckLength(zeros.Length, nameof(zeros));
        var halfScales = new Half[scales.Length];
        var byteZeros = new byte[zeros.Length];
        for (int k = 0; k < scales.Length; k++)
        {
            halfScales[k] = (Half)scales[k];
            if ((float)halfScales[k] != scales[k] || !float.IsFinite(scales[k]))
                throw new ArgumentException($"scale {scales[k]} (group {k / outDim}, row {k % outDim}) is not a finite float16 value", nameof(scales));
            if ((uint)zeros[k] > MaxZero) throw new ArgumentException($"zero {zeros[k]} (group {k / outDim}, row {k % outDim}) is outside 0 .. {MaxZero}", nameof(zeros));
            byteZeros[k] = (byte)zeros[k];
        }

        int quads = inDim / 4;
        var packedCodes = new byte[(long)outDim * quads];
        var positions = new byte[(long)outDim * (inDim / 8)];
        for (int o = 0; o < outDim; o++)
            for (int k = 0; k < quads; k++)
            {
                int at = o * inDim + 4 * k, kept = 0, nibble = 0, code = 0;
                for (int p = 0; p < 4; p++)
                {
                    if (!keep[at + p]) continue;
                    if (kept < 2)
                    {
                        if (codes[at + p] > 15) throw new ArgumentException($"code {codes[at + p]} at [{o}, {4 * k + p}] does not fit in 4 bits", nameof(codes));
                        nibble |= p << (2 * kept);
                        code |= codes[at + p] << (4 * kept);
                    }
                    kept++;
                }
                if (kept != 2)
                    throw new ArgumentException($"row {o}, quad of inputs {4 * k}..{4 * k + 3}: {kept} kept, but 2:4 sparsity keeps exactly 2 of every 4", nameof(keep));
                packedCodes[(long)o * quads + k] = (byte)code;
                positions[(long)o * (inDim / 8) + k / 2] |= (byte)(nibble << (4 * (k % 2)));
            }
        Store(packedCodes, positions, halfScales, byteZeros);
    }

    private Sparse24Int4Matrix(int inDim, int outDim, int groupSize)
    {
        if (inDim <= 0 || outDim <= 0) throw new ArgumentException("dimensions must be positive");
        if (inDim % 8 != 0) throw new ArgumentException($"in ({inDim}) must be a multiple of 8: whole quads, two position nibbles to a byte", nameof(inDim));
        if (groupSize <= 0 || groupSize % 32 != 0 || (groupSize > BlockInputs ? groupSize % BlockInputs != 0 : BlockInputs % groupSize != 0))
            throw new ArgumentException($"group size {groupSize} is not supported (32, 64, or a multiple of 128)", nameof(groupSize));
        InDim = inDim; OutDim = outDim; GroupSize = groupSize;
        Groups = (inDim + groupSize - 1) / groupSize;
        PaddedIn = (inDim + SuperblockInputs - 1) / SuperblockInputs * SuperblockInputs;
        GroupsPerBlock = groupSize >= BlockInputs ? 1 : BlockInputs / groupSize;
        Stream = GC.AllocateArray<byte>(checked(Quartets * Superblocks * RecordBytes), pinned: true);
        ScaleStream = GC.AllocateArray<ushort>(checked(Quartets * Blocks * 4 * GroupsPerBlock + Slack), pinned: true);
        ZeroStream = GC.AllocateArray<byte>(checked(Quartets * Blocks * 4 * GroupsPerBlock + Slack), pinned: true);
    }

    private void CheckLength(int length, string name)
    {
        if (length != (long)Groups * OutDim) throw new ArgumentException($"{name} has {length} entries, expected {Groups}×{OutDim} (groups × out)", name);
    }

    /// <summary>
    /// From the canonical tensors (layout in the class summary), as a checkpoint loader reads them; checks their
    /// sizes, that every quad's places are two distinct indices in order, zeros ≤ <see cref="MaxZero"/> and finite scales.
    /// </summary>
    public static Sparse24Int4Matrix FromTensors(int inDim, int outDim, int groupSize, ReadOnlySpan<byte> codes,
        ReadOnlySpan<byte> positions, ReadOnlySpan<Half> scales, ReadOnlySpan<byte> zeros)
    {
        var matrix = new Sparse24Int4Matrix(inDim, outDim, groupSize);
        if (codes.Length != (long)outDim * (inDim / 4)) throw new ArgumentException($"codes has {codes.Length} bytes, expected {outDim}×{inDim / 4} (out × in/4)", nameof(codes));
        if (positions.Length != (long)outDim * (inDim / 8)) throw new ArgumentException($"positions has {positions.Length} bytes, expected {outDim}×{inDim / 8} (out × in/8)", nameof(positions));
        matrix.CheckLength(scales.Length, nameof(scales));
        matrix.CheckLength(zeros.Length, nameof(zeros));
        for (int k = 0; k < scales.Length; k++)
        {
            if (!Half.IsFinite(scales[k])) throw new ArgumentException($"scale {scales[k]} (group {k / outDim}, row {k % outDim}) is not finite", nameof(scales));
            if (zeros[k] > MaxZero) throw new ArgumentException($"zero {zeros[k]} (group {k / outDim}, row {k % outDim}) is outside 0 .. {MaxZero}", nameof(zeros));
        }
        int quads = inDim / 4;
        for (int o = 0; o < outDim; o++)
            for (int k = 0; k < quads; k++)
            {
                int nibble = positions[o * (inDim / 8) + k / 2] >> (4 * (k % 2)) & 15;
                if ((nibble & 3) >= nibble >> 2)
                    throw new ArgumentException($"row {o}, quad of inputs {4 * k}..{4 * k + 3}: places {nibble & 3} and {nibble >> 2} are not two kept weights in order", nameof(positions));
            }
        matrix.Store(codes, positions, scales, zeros);
        return matrix;
    }

    /// <summary>
    /// Field (0 .. 63) of the 128-bit position string that holds slot j's place. <c>vpmultishiftqb</c> gives byte j of
    /// 64-bit lane L = j/8 the bits of that lane's word from bit offset 2·(8·(L/2) + j mod 8) on, and with the 16 bytes
    /// broadcast to every 128-bit lane, lane L holds word L mod 2.
    /// </summary>
    internal static int PositionField(int slot)
    {
        int lane = slot / 8;
        return 32 * (lane % 2) + 8 * (lane / 2) + slot % 8;
    }

    /// <summary>Entry of the scale and zero streams for row <paramref name="row"/> and group <paramref name="group"/>.</summary>
    internal int MetaIndex(int row, int group)
    {
        int block = GroupSize >= BlockInputs ? group * (GroupSize / BlockInputs) : group / GroupsPerBlock;
        int h = GroupSize >= BlockInputs ? 0 : group % GroupsPerBlock;
        return (((row >> 2) * Blocks + block) * 4 + (row & 3)) * GroupsPerBlock + h;
    }

    /// <summary>Offset in <see cref="Stream"/> of row <paramref name="row"/>'s 64 code bytes in superblock <paramref name="superblock"/>.</summary>
    internal int CodesOffset(int row, int superblock) => ((row >> 2) * Superblocks + superblock) * RecordBytes + 64 * (row & 3);

    /// <summary>Offset in <see cref="Stream"/> of row <paramref name="row"/>'s 16 position bytes of block <paramref name="block"/>.</summary>
    internal int PositionsOffsetOf(int row, int block) =>
        ((row >> 2) * Superblocks + block / 2) * RecordBytes + PositionsOffset + 32 * (row & 3) + 16 * (block % 2);

    /// <summary>Code of slot <paramref name="slot"/> of block <paramref name="block"/> of a row (kernel layout, one at a time).</summary>
    internal int KeptCode(int row, int block, int slot) => Stream[CodesOffset(row, block / 2) + slot] >> (4 * (block % 2)) & 15;

    /// <summary>Place (0 .. 3) inside its quad of slot <paramref name="slot"/> of block <paramref name="block"/> of a row.</summary>
    internal int KeptPlace(int row, int block, int slot)
    {
        int field = PositionField(slot);
        return Stream[PositionsOffsetOf(row, block) + field / 4] >> (2 * (field % 4)) & 3;
    }

    internal unsafe float Scale(int row, int group) => Float16.Table[ScaleStream[MetaIndex(row, group)]];

    internal int Zero(int row, int group) => ZeroStream[MetaIndex(row, group)];

    /// <summary>Canonical tensors (validated) → kernel layout. Padding quads keep places (0, 1) with code 0 (x is 0 there).</summary>
    private void Store(ReadOnlySpan<byte> codes, ReadOnlySpan<byte> positions, ReadOnlySpan<Half> scales, ReadOnlySpan<byte> zeros)
    {
        int quads = InDim / 4;
        for (int o = 0; o < 4 * Quartets; o++)
            for (int k = 0; k < PaddedIn / 4; k++)
            {
                int code = 0, nibble = 1 << 2; // places (0, 1)
                if (o < OutDim && k < quads)
                {
                    code = codes[o * quads + k];
                    nibble = positions[o * (InDim / 8) + k / 2] >> (4 * (k % 2)) & 15;
                }
                int block = k / 32, slot = 2 * (k % 32);
                int codesAt = CodesOffset(o, block / 2) + slot, shift = 4 * (block % 2);
                Stream[codesAt] |= (byte)((code & 15) << shift);
                Stream[codesAt + 1] |= (byte)((code >> 4) << shift);
                int positionsAt = PositionsOffsetOf(o, block);
                for (int second = 0; second < 2; second++)
                {
                    int field = PositionField(slot + second);
                    Stream[positionsAt + field / 4] |= (byte)((nibble >> (2 * second) & 3) << (2 * (field % 4)));
                }
            }
        for (int g = 0; g < Groups; g++)
            for (int o = 0; o < OutDim; o++)
            {
                int at = MetaIndex(o, g);
                ScaleStream[at] = BitConverter.HalfToUInt16Bits(scales[g * OutDim + o]);
                ZeroStream[at] = zeros[g * OutDim + o];
            }
        // With groups of 128·m inputs, the m blocks of a group each carry its scale and zero.
        if (GroupSize > BlockInputs)
            for (int o = 0; o < OutDim; o++)
                for (int b = 0; b < Blocks; b++)
                {
                    int g = b * BlockInputs / GroupSize;
                    if (g >= Groups) continue;
                    int at = (((o >> 2) * Blocks + b) * 4 + (o & 3)) * GroupsPerBlock, from = MetaIndex(o, g);
                    ScaleStream[at] = ScaleStream[from];
                    ZeroStream[at] = ZeroStream[from];
                }
    }

    /// <summary>The canonical tensors, read back from the kernel layout.</summary>
    public Tensors ToTensors()
    {
        int quads = InDim / 4;
        var codes = new byte[(long)OutDim * quads];
        var positions = new byte[(long)OutDim * (InDim / 8)];
        for (int o = 0; o < OutDim; o++)
            for (int k = 0; k < quads; k++)
            {
                int block = k / 32, slot = 2 * (k % 32);
                codes[o * quads + k] = (byte)(KeptCode(o, block, slot) | KeptCode(o, block, slot + 1) << 4);
                int nibble = KeptPlace(o, block, slot) | KeptPlace(o, block, slot + 1) << 2;
                positions[o * (InDim / 8) + k / 2] |= (byte)(nibble << (4 * (k % 2)));
            }
        var scales = new Half[Groups * OutDim];
        var zeros = new byte[Groups * OutDim];
        for (int g = 0; g < Groups; g++)
            for (int o = 0; o < OutDim; o++)
            {
                int at = MetaIndex(o, g);
                scales[g * OutDim + o] = BitConverter.UInt16BitsToHalf(ScaleStream[at]);
                zeros[g * OutDim + o] = ZeroStream[at];
            }
        return new Tensors(codes, positions, scales, zeros);
    }

    /// <summary>Back to one code per weight and the keep mask, both [out, in]; pruned weights get code 0.</summary>
    public (byte[] Codes, bool[] Keep) Unpack()
    {
        var codes = new byte[(long)OutDim * InDim];
        var keep = new bool[codes.Length];
        for (int o = 0; o < OutDim; o++)
            for (int k = 0; k < InDim / 4; k++)
                for (int second = 0; second < 2; second++)
                {
                    int slot = 2 * (k % 32) + second;
                    int i = o * InDim + 4 * k + KeptPlace(o, k / 32, slot);
                    keep[i] = true;
                    codes[i] = (byte)KeptCode(o, k / 32, slot);
                }
        return (codes, keep);
    }

    /// <summary>Ŵ [out, in] in float: scale·(code − zero) where kept, 0 where pruned.</summary>
    public float[] Dequantize()
    {
        var (codes, keep) = Unpack();
        var w = new float[codes.Length];
        for (int o = 0; o < OutDim; o++)
            for (int i = 0; i < InDim; i++)
            {
                int g = i / GroupSize;
                if (keep[o * InDim + i]) w[o * InDim + i] = (codes[o * InDim + i] - Zero(o, g)) * Scale(o, g);
            }
        return w;
    }

    /// <summary>
    /// Bytes one matrix × vector product reads: the code-and-position stream, the float16 scales and the zero bytes, as
    /// laid out (padding included, slack excluded). For in a multiple of 256 and 128-input groups: 51/128 bytes per
    /// weight (3.19 bits).
    /// </summary>
    public long WeightBytes => Stream.LongLength + 2L * (ScaleStream.Length - Slack) + (ZeroStream.Length - Slack);
}
