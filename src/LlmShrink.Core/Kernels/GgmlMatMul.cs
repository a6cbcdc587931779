using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using LlmShrink.Formats;

namespace LlmShrink.Kernels;

/// <summary>
/// y[n, out] = x[n, in]·Wᵀ with W stored as ggml blocks (Q4_0, Q8_0, Q4_K, Q5_K, Q6_K and the I-quants but IQ1_S/IQ1_M; layouts in
/// <see cref="GgmlBlocks"/> and <see cref="GgmlIQuantBlocks"/>; the codebook I-quants' dots in <see cref="IQuantGridDots"/>),
/// read in place and never expanded. As in llama.cpp, each x row is first quantized
/// to int8 blocks (<see cref="QuantizeActivations"/>: 32 elements per scale, 256 for the K-quants), so each weight block meets
/// its activation block in an exact integer dot product that is scaled once: Σ w·x ≈ d_w·d_x·Σ q_w·q_x. The only
/// error beyond float rounding is the activation's rounding to int8.
/// <para>
/// The integer dot of 32 int8 pairs is <c>vpmaddubsw</c> (u8×s8 → pairs summed to int16) then <c>vpmaddwd</c> by 1 (→ int32),
/// with the sign of the weight moved onto x so that the first operand is unsigned (|w| ≤ 128, |x| ≤ 127, so no pair
/// sum saturates). Where AVX-VNNI exists, <c>vpdpbusd</c> does both steps in one.
/// </para>
/// <para>
/// That is the decode path (n = 1), bound by reading W. A prompt (n &gt; 1) is bound by arithmetic instead, and an
/// integer dot per (x row, W row) pair, with its horizontal sum, cannot keep up with a register-blocked float GEMM. Q4_0,
/// Q8_0 and the K-quants Q4_K, Q5_K, Q6_K re-lay 8 W rows so that one lane is one row (GgmlPromptGemm.cs,
/// GgmlKQuantPromptGemm.cs) and stay on int8 activations, as decode does; the other types dequantize a tile of <see cref="TiledGemm.TileRows"/> W rows × <see cref="MatMul.SliceK"/>
/// elements once into a per-worker float buffer and multiply it with every x row by <see cref="MatMul"/>'s micro-kernel
/// (<see cref="TiledGemm"/>), so their prompt results are the dequantized float product, without the activation rounding.
/// </para>
/// </summary>
public static unsafe partial class GgmlMatMul
{
    /// <summary>
    /// Float16's table is built before any kernel here is compiled: the kernels are compiled fully optimized on first
    /// call, and a class still uninitialized then costs a class-initialization check inside each block loop, around which
    /// the JIT spilled every accumulator to the stack (JIT disassembly, .NET 10).
    /// Initialized, <see cref="Float16.Table"/> is a constant address.
    /// </summary>
    static GgmlMatMul() => RuntimeHelpers.RunClassConstructor(typeof(Float16).TypeHandle);

    public static bool Supports(TensorType type) =>
        type is TensorType.Q4_0 or TensorType.Q8_0 or TensorType.Q4_K or TensorType.Q5_K or TensorType.Q6_K or TensorType.IQ4_NL
            or TensorType.IQ4_XS or TensorType.IQ3_XXS or TensorType.IQ3_S or TensorType.IQ2_XXS or TensorType.IQ2_XS or TensorType.IQ2_S;

    /// <summary>Elements per activation scale: one per weight block (the K-quant super-block of 256), one per sub-block of 32 for the I-quants.</summary>
    public static int ActivationBlock(TensorType type) => type is TensorType.Q4_K or TensorType.Q5_K or TensorType.Q6_K ? 256 : 32;

    /// <summary>
    /// Whether the dot needs Σq_x per 32 activations: the K-quants with a minimum per sub-block (y = d·sc·q − dmin·m), and
    /// the types whose codes enter the dot unsigned (<see cref="CodeOffset"/>).
    /// </summary>
    public static bool NeedsActivationSums(TensorType type) => type is TensorType.Q4_K or TensorType.Q5_K or TensorType.Q4_0 or TensorType.Q8_0;

    /// <summary>
    /// The constant that makes <paramref name="type"/>'s codes unsigned for <c>vpdpbusd</c>/<c>vpmaddubsw</c>, whose first
    /// operand is unsigned: Σ w·x = Σ (w + c)·x − c·Σx. Q4_0 stores w + 8 already (its nibbles); Q8_0's w + 128 is
    /// w XOR 0x80, but u·x pairs then reach 2·255·127, beyond <c>vpmaddubsw</c>'s int16, so only VNNI (which sums
    /// into int32 without saturating) takes it. Zero: the kernel moves signs instead.
    /// </summary>
    private static int CodeOffset(TensorType type) => type switch
    {
        TensorType.Q4_0 => 8,
        TensorType.Q8_0 when AvxVnni.IsSupported => 128,
        _ => 0,
    };

    private const int ItemRows = 16;

    [ThreadStatic] private static sbyte[]? t_q;
    [ThreadStatic] private static float[]? t_scales;
    [ThreadStatic] private static int[]? t_sums;
    [ThreadStatic] private static int[]? t_offsets;
    [ThreadStatic] private static byte[]? t_pairs;
    [ThreadStatic] private static Job? t_job;
    [ThreadStatic] private static TileDecoder? t_decoder;

    /// <summary>W is <paramref name="outDim"/> rows of <paramref name="inDim"/> elements of <paramref name="type"/> at <paramref name="w"/>.</summary>
    public static void Multiply(TensorType type, ReadOnlySpan<float> x, byte* w, Span<float> y, int n, int inDim, int outDim,
        WorkerPool? pool = null, int threads = 0) =>
        Multiply(type, x, w, y, n, inDim, outDim, pool, threads, vectorized: Avx2.IsSupported);

    /// <summary><paramref name="vectorized"/> = false runs the scalar reference (tests check the portable path with it).</summary>
    internal static void Multiply(TensorType type, ReadOnlySpan<float> x, byte* w, Span<float> y, int n, int inDim, int outDim,
        WorkerPool? pool, int threads, bool vectorized)
    {
        if (!Supports(type)) throw new ArgumentException($"{type} has no direct kernel", nameof(type));
        if (n < 0 || inDim <= 0 || outDim <= 0) throw new ArgumentOutOfRangeException(nameof(n), "matrix dimensions must be positive");
        if (inDim % TensorTypes.BlockElements(type) != 0) throw new ArgumentException($"in ({inDim}) is not a whole number of {type} blocks", nameof(inDim));
        MatMulShapes.Check(x.Length, y.Length, n, inDim, outDim);
        if (n == 0) return;
        pool ??= WorkerPool.Shared;
        if (n > 1 && vectorized && Avx512F.IsSupported && !HasIntegerPrompt(type))
        {
            var decoder = t_decoder ??= new TileDecoder();
            decoder.Type = type; decoder.W = w; decoder.RowBytes = (int)TensorTypes.ByteCount(type, inDim);
            fixed (float* px = x, py = y) TiledGemm.Multiply(decoder, px, py, n, inDim, outDim, pool, threads);
            decoder.W = null;
            return;
        }

        int block = ActivationBlock(type);
        int elements = n * inDim;
        if (t_q is null || t_q.Length < elements) t_q = GC.AllocateUninitializedArray<sbyte>(elements, pinned: true);
        if (t_scales is null || t_scales.Length < elements / block) t_scales = GC.AllocateUninitializedArray<float>(elements / block, pinned: true);
        if (t_sums is null || t_sums.Length < elements / 32) t_sums = GC.AllocateUninitializedArray<int>(elements / 32, pinned: true);
        for (int i = 0; i < n; i++)
            QuantizeActivations.Quantize(x.Slice(i * inDim, inDim), block, t_q.AsSpan(i * inDim, inDim),
                t_scales.AsSpan(i * inDim / block, inDim / block), NeedsActivationSums(type) ? t_sums.AsSpan(i * inDim / 32, inDim / 32) : default);

        // −(c/8)·Σq per activation block of 32: the start of each of the eight int32 lanes of the block's dot, so that
        // the lanes sum to Σ(w + c)·q − c·Σq = Σ w·q exactly (CodeOffset; c/8 is whole for c = 8 and 128).
        int offset = CodeOffset(type);
        if (t_offsets is null || t_offsets.Length < elements / 32) t_offsets = GC.AllocateUninitializedArray<int>(elements / 32, pinned: true);
        if (offset != 0)
            for (int b = 0; b < elements / 32; b++) t_offsets[b] = -(offset / 8) * t_sums[b];

        // Q4_0 decode reads x in pair records (GgmlQ4_0Pairs.cs), 64-byte aligned so that no vector load splits a cache line.
        bool pairedQ4_0 = type == TensorType.Q4_0 && vectorized && !(n > 1 && HasIntegerPrompt(type));
        int pairRowBytes = inDim / 64 * PairBytes;
        if (pairedQ4_0 && (t_pairs is null || t_pairs.Length < n * pairRowBytes + 64)) t_pairs = GC.AllocateUninitializedArray<byte>(n * pairRowBytes + 64, pinned: true);

        fixed (sbyte* q = t_q)
        fixed (float* scales = t_scales, py = y)
        fixed (int* sums = t_sums, offsets = t_offsets)
        fixed (byte* pairBuffer = t_pairs)
        {
            if (n > 1 && vectorized && HasIntegerPrompt(type))
            {
                if (IsKQuant(type)) MultiplyKQuantPrompt(type, w, q, scales, sums, py, n, inDim, outDim, pool, threads);
                else MultiplyPrompt(type, w, q, scales, sums, offsets, py, n, inDim, outDim, pool, threads);
                return;
            }
            byte* pairs = (byte*)(((nuint)pairBuffer + 63) & ~(nuint)63);
            if (pairedQ4_0)
                for (int i = 0; i < n; i++)
                    ArrangePairs(q + (long)i * inDim, scales + (long)i * inDim / 32, sums + (long)i * inDim / 32, pairs + (long)i * pairRowBytes, inDim / 32);
            var job = t_job ??= new Job();
            job.Type = type; job.W = w; job.Q = q; job.Scales = scales; job.Offsets = offsets; job.Sums = sums; job.Y = py;
            job.Pairs = pairs; job.PairRowBytes = pairRowBytes;
            job.Vectorized = vectorized; job.N = n; job.In = inDim; job.Out = outDim; job.RowBytes = (int)TensorTypes.ByteCount(type, inDim);
            pool.For((outDim + ItemRows - 1) / ItemRows, job, threads);
            job.W = null; job.Q = null; job.Scales = null; job.Offsets = null; job.Sums = null; job.Y = null; job.Pairs = null;
        }
    }

    private sealed class Job : IParallelWork
    {
        public TensorType Type;
        public byte* W;
        public sbyte* Q;
        public float* Scales, Y;
        public int* Sums, Offsets;
        public byte* Pairs;
        public int N, In, Out, RowBytes, PairRowBytes;
        public bool Vectorized;

        public void Execute(int begin, int end, int worker)
        {
            int j0 = begin * ItemRows, j1 = Math.Min(end * ItemRows, Out);
            int block = ActivationBlock(Type);
            // Every x row meets this item's W rows while they are still in cache.
            for (int i = 0; i < N; i++)
            {
                sbyte* q = Q + (long)i * In;
                float* scales = Scales + (long)i * In / block;
                int* sums = Sums + (long)i * In / 32;
                int* offsets = Offsets + (long)i * In / 32;
                byte* pairs = Pairs + (long)i * PairRowBytes;
                int j = j0;
                if (Vectorized && Type == TensorType.Q4_0)
                {
                    // Rows j, j + quarter, j + 2·quarter, j + 3·quarter per pass share the x loads (GgmlQ4_0Pairs.cs); up to 3 rows are left over.
                    int quarter = (j1 - j0) / 4;
                    for (; j < j0 + quarter; j++)
                        DotQ4_0PairsFourRows(W + (long)j * RowBytes, RowBytes, quarter, pairs, q, scales, offsets, In / 32, Y + (long)i * Out + j);
                    j = j0 + 4 * quarter;
                }
                for (; j < j1; j++)
                {
                    byte* row = W + (long)j * RowBytes;
                    Y[(long)i * Out + j] = !Vectorized ? DotReference(Type, new ReadOnlySpan<byte>(row, RowBytes), new ReadOnlySpan<sbyte>(q, In),
                            new ReadOnlySpan<float>(scales, In / block), new ReadOnlySpan<int>(sums, In / 32))
                        : Type switch
                        {
                            TensorType.Q4_0 => DotQ4_0Pairs(row, pairs, q, scales, offsets, In / 32),
                            TensorType.Q8_0 => AvxVnni.IsSupported ? DotQ8_0Vnni(row, q, scales, offsets, In / 32) : DotQ8_0(row, q, scales, In / 32),
                            TensorType.Q4_K => DotQ4_K(row, q, scales, sums, In / 256),
                            TensorType.Q5_K => DotQ5_K(row, q, scales, sums, In / 256),
                            TensorType.Q6_K => DotQ6_K(row, q, scales, In / 256),
                            TensorType.IQ4_NL => DotIQ4_NL(row, q, scales, In / 32),
                            TensorType.IQ4_XS => DotIQ4_XS(row, q, scales, In / 256),
                            TensorType.IQ3_XXS => IQuantGridDots.DotIQ3_XXS(row, q, scales, In / 256),
                            TensorType.IQ3_S => IQuantGridDots.DotIQ3_S(row, q, scales, In / 256),
                            TensorType.IQ2_XXS => IQuantGridDots.DotIQ2_XXS(row, q, scales, In / 256),
                            TensorType.IQ2_XS => IQuantGridDots.DotIQ2_XS(row, q, scales, In / 256),
                            _ => IQuantGridDots.DotIQ2_S(row, q, scales, In / 256),
                        };
                }
            }
        }
    }

    /// <summary>Rows of W for the prompt path; slices start on multiples of <see cref="MatMul.SliceK"/>, a whole number of blocks of every supported type.</summary>
    private sealed class TileDecoder : IRowDecoder
    {
        public TensorType Type;
        public byte* W;
        public int RowBytes;

        public void DecodeRow(int row, int k0, int len, float* destination) =>
            DequantizeSlice(Type, W + (long)row * RowBytes + TensorTypes.ByteCount(Type, k0), len, destination);
    }

    /// <summary>
    /// <paramref name="count"/> elements (whole blocks) decoded to float: exactly <see cref="GgmlBlocks.Dequantize"/>'s
    /// values, with Q4_0 and Q8_0 widened 16 codes per instruction (same float operations, so bit-identical).
    /// </summary>
    private static void DequantizeSlice(TensorType type, byte* blocks, int count, float* destination)
    {
        switch (type)
        {
            case TensorType.Q4_0:
                for (int b = 0; b < count / 32; b++, blocks += 18, destination += 32)
                {
                    var d = Vector512.Create(Fp16(blocks));
                    var eight = Vector512.Create(8f);
                    var qs = Vector128.Load(blocks + 2);
                    var low = Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(qs & Vector128.Create((byte)0xF)));
                    var high = Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(qs >>> 4));
                    ((low - eight) * d).Store(destination);
                    ((high - eight) * d).Store(destination + 16);
                }
                break;
            case TensorType.Q8_0:
                for (int b = 0; b < count / 32; b++, blocks += 34, destination += 32)
                {
                    var d = Vector512.Create(Fp16(blocks));
                    var low = Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load((sbyte*)blocks + 2)));
                    var high = Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load((sbyte*)blocks + 18)));
                    (low * d).Store(destination);
                    (high * d).Store(destination + 16);
                }
                break;
            default:
                GgmlBlocks.Dequantize(type, new ReadOnlySpan<byte>(blocks, (int)TensorTypes.ByteCount(type, count)), new Span<float>(destination, count));
                break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Fp16(byte* p) => Float16.Table[*(ushort*)p];

    /// <summary>Eight int32 lanes whose total is Σ w·x over 32 signed pairs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> DotSigned(Vector256<sbyte> w, Vector256<sbyte> x) =>
        DotUnsigned(Avx2.Sign(w, w).AsByte(), Avx2.Sign(x, w));

    /// <summary>Eight int32 lanes whose total is Σ u·x over 32 pairs of unsigned and signed bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<int> DotUnsigned(Vector256<byte> u, Vector256<sbyte> x) => DotUnsigned(Vector256<int>.Zero, u, x);

    /// <summary><paramref name="start"/> plus the eight int32 lanes of Σ u·x (<c>vpdpbusd</c> adds into its accumulator for free).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> DotUnsigned(Vector256<int> start, Vector256<byte> u, Vector256<sbyte> x) =>
        AvxVnni.IsSupported ? AvxVnni.MultiplyWideningAndAdd(start, u, x)
                            : start + Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, x), Vector256<short>.One);

    /// <summary>The 32 nibbles of 16 bytes in element order: low nibbles are elements 0..15, high nibbles 16..31.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Nibbles(byte* qs)
    {
        var b = Vector128.Load(qs);
        var mask = Vector128.Create((byte)0xF);
        return Vector256.Create(b & mask, (b >>> 4) & mask);
    }

    /// <summary>
    /// Q4_0: the nibbles go straight into the dot as unsigned codes w + 8, the lanes starting from the block's −Σq_x
    /// (<paramref name="offsets"/>), so they sum to Σ w·q_x without moving signs per block. Two accumulators, because
    /// one FMA chain waits 4 cycles per block on Zen 4 (two blocks per pass: 8 % faster on ggml-gemv, 1 and 2 threads).
    /// Decode uses <see cref="DotQ4_0Pairs"/>, which needs x arranged per call; this serves the prompt's leftover rows.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotQ4_0(byte* w, sbyte* q, float* scales, int* offsets, int blocks)
    {
        Vector256<float> even = default, odd = default;
        int b = 0;
        for (; b + 2 <= blocks; b += 2, w += 36)
        {
            even = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(DotUnsigned(Vector256.Create(offsets[b]), Nibbles(w + 2), Vector256.Load(q + 32 * b))),
                Vector256.Create(Fp16(w) * scales[b]), even);
            odd = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(DotUnsigned(Vector256.Create(offsets[b + 1]), Nibbles(w + 20), Vector256.Load(q + 32 * b + 32))),
                Vector256.Create(Fp16(w + 18) * scales[b + 1]), odd);
        }
        if (b < blocks)
            even = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(DotUnsigned(Vector256.Create(offsets[b]), Nibbles(w + 2), Vector256.Load(q + 32 * b))),
                Vector256.Create(Fp16(w) * scales[b]), even);
        return Vector256.Sum(even + odd);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotQ8_0(byte* w, sbyte* q, float* scales, int blocks)
    {
        var acc = Vector256<float>.Zero;
        for (int b = 0; b < blocks; b++, w += 34)
        {
            var dot = DotSigned(Vector256.Load((sbyte*)(w + 2)), Vector256.Load(q + 32 * b));
            acc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(dot), Vector256.Create(Fp16(w) * scales[b]), acc);
        }
        return Vector256.Sum(acc);
    }

    /// <summary>Q8_0 with VNNI: the codes XOR 0x80 are w + 128 as unsigned bytes, the lanes start from −16·Σq_x (see <see cref="CodeOffset"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotQ8_0Vnni(byte* w, sbyte* q, float* scales, int* offsets, int blocks)
    {
        var acc = Vector256<float>.Zero;
        var flip = Vector256.Create((byte)0x80);
        for (int b = 0; b < blocks; b++, w += 34)
        {
            var dot = DotUnsigned(Vector256.Create(offsets[b]), Vector256.Load(w + 2) ^ flip, Vector256.Load(q + 32 * b));
            acc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(dot), Vector256.Create(Fp16(w) * scales[b]), acc);
        }
        return Vector256.Sum(acc);
    }

    /// <summary>
    /// Q4_K: y = Σ_sub (d·sc·Σ q_w·q_x − dmin·m·Σ q_x)·d_x. The sub-block scale multiplies the int16 pair sums inside
    /// <c>vpmaddwd</c> (≤ 2·15·127·63, no overflow); the minimum uses the activation's Σq per 32 from quantization.
    /// The eight scales sit in both 128-bit halves of one register, and <c>vpshufb</c> spreads scale k over every int16
    /// lane (<see cref="FirstScaleIndex"/>): one instruction instead of a byte load, move and broadcast.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotQ4_K(byte* w, sbyte* q, float* scales, int* sums, int blocks)
    {
        Vector256<float> acc = default, minimums = default;
        var mask = Vector256.Create((byte)0xF);
        for (int b = 0; b < blocks; b++, w += 144, q += 256, sums += 8)
        {
            var scalesAndMins = UnpackScaleMinK4(w + 4);
            var subScales = Vector256.Create(scalesAndMins);
            Vector256<byte> lowIndex = FirstScaleIndex, highIndex = FirstScaleIndex + NextScaleIndex;
            var isum = Vector256<int>.Zero;
            for (int chunk = 0; chunk < 4; chunk++)
            {
                var bytes = Vector256.Load(w + 16 + 32 * chunk);
                var low = Avx2.MultiplyAddAdjacent(bytes & mask, Vector256.Load(q + 64 * chunk));
                var high = Avx2.MultiplyAddAdjacent((bytes >>> 4) & mask, Vector256.Load(q + 64 * chunk + 32));
                isum += Avx2.MultiplyAddAdjacent(low, Avx2.Shuffle(subScales, lowIndex).AsInt16());
                isum += Avx2.MultiplyAddAdjacent(high, Avx2.Shuffle(subScales, highIndex).AsInt16());
                lowIndex += NextScaleIndex + NextScaleIndex; highIndex += NextScaleIndex + NextScaleIndex;
            }
            acc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(isum), Vector256.Create(Fp16(w) * scales[b]), acc);
            minimums = Vector256.FusedMultiplyAdd(MinimumTerms(scalesAndMins, sums), Vector256.Create(Fp16(w + 2) * scales[b]), minimums);
        }
        return Vector256.Sum(acc - minimums);
    }

    /// <summary>
    /// Q5_K: Q4_K with a fifth bit (+16) per element — bit 2·chunk (low nibbles) or 2·chunk + 1 (high nibbles) of the
    /// byte qh[l] shared by the four 64-element chunks. Codes ≤ 31, so the int16 pair sums stay ≤ 2·31·127 and the
    /// scaled ones ≤ 2·7874·63.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotQ5_K(byte* w, sbyte* q, float* scales, int* sums, int blocks)
    {
        Vector256<float> acc = default, minimums = default;
        var mask = Vector256.Create((byte)0xF);
        var sixteen = Vector256.Create((byte)16);
        for (int b = 0; b < blocks; b++, w += 176, q += 256, sums += 8)
        {
            var scalesAndMins = UnpackScaleMinK4(w + 4);
            var subScales = Vector256.Create(scalesAndMins);
            Vector256<byte> lowIndex = FirstScaleIndex, highIndex = FirstScaleIndex + NextScaleIndex;
            // qh moves down two bits per chunk as 16-bit lanes (one shift; a byte shift by the chunk's count compiled to
            // eight instructions): what crosses in from the neighbouring byte lands in bits 6–7, never read as bits 0–1.
            var high = Vector256.Load(w + 16).AsUInt16();
            var isum = Vector256<int>.Zero;
            for (int chunk = 0; chunk < 4; chunk++, high >>>= 2)
            {
                var bytes = Vector256.Load(w + 48 + 32 * chunk);
                var lowCodes = (bytes & mask) | ((high << 4).AsByte() & sixteen);
                var highCodes = (bytes >>> 4) | ((high << 3).AsByte() & sixteen);
                var low = Avx2.MultiplyAddAdjacent(lowCodes, Vector256.Load(q + 64 * chunk));
                var upper = Avx2.MultiplyAddAdjacent(highCodes, Vector256.Load(q + 64 * chunk + 32));
                isum += Avx2.MultiplyAddAdjacent(low, Avx2.Shuffle(subScales, lowIndex).AsInt16());
                isum += Avx2.MultiplyAddAdjacent(upper, Avx2.Shuffle(subScales, highIndex).AsInt16());
                lowIndex += NextScaleIndex + NextScaleIndex; highIndex += NextScaleIndex + NextScaleIndex;
            }
            acc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(isum), Vector256.Create(Fp16(w) * scales[b]), acc);
            minimums = Vector256.FusedMultiplyAdd(MinimumTerms(scalesAndMins, sums), Vector256.Create(Fp16(w + 2) * scales[b]), minimums);
        }
        return Vector256.Sum(acc - minimums);
    }

    /// <summary>
    /// <c>vpshufb</c> indices that spread byte k of each 128-bit half over all sixteen int16 lanes: k in every even byte,
    /// 0x80 (which writes zero) in every odd one. Scale 0's; adding <see cref="NextScaleIndex"/> moves to the next scale.
    /// </summary>
    private static Vector256<byte> FirstScaleIndex => Vector256.Create((ushort)0x8000).AsByte();
    private static Vector256<byte> NextScaleIndex => Vector256.Create((ushort)1).AsByte();

    /// <summary>
    /// Q6_K: y = d·d_x·Σ_group sc·Σ (q − 32)·q_x, with a signed scale per 16 elements. The codes q − 32 ∈ [−32, 31] are
    /// signed, so their sign moves onto x (as <see cref="DotSigned"/>) and <c>vpmaddubsw</c> gives int16 pair sums
    /// (≤ 2·32·127); <c>vpmaddwd</c> by a vector holding the two groups' scales (eight int16 lanes each) weighs them
    /// (≤ 2·8128·128 per lane) and sums to int32; a whole super-block stays within int32 (256·32·127·128 &lt; 2³¹).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotQ6_K(byte* w, sbyte* q, float* scales, int blocks)
    {
        var acc = Vector256<float>.Zero;
        for (int b = 0; b < blocks; b++, w += 210, q += 256)
        {
            var groupScales = Vector128.Load((sbyte*)(w + 192));
            var isum = Q6Half(w, q, groupScales, 0) + Q6Half(w + 64, q + 128, groupScales, 1);
            acc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(isum), Vector256.Create(Fp16(w + 208) * scales[b]), acc);
        }
        return Vector256.Sum(acc);
    }

    /// <summary>
    /// One half (128 elements) of a Q6_K super-block: element 32k + i takes the low or high nibble of byte i of
    /// <c>ql</c> (k even: low) and bits 2k, 2k + 1 of byte i of <c>qh</c>. Written out with constant shifts and a constant
    /// <paramref name="half"/> (inlined twice): the loop over k with a variable byte shift compiled to a slow path.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q6Half(byte* ql, sbyte* x, Vector128<sbyte> groupScales, int half)
    {
        var mask = Vector256.Create((byte)0xF);
        var lowA = Vector256.Load(ql);
        var lowB = Vector256.Load(ql + 32);
        var high = Vector256.Load(ql + 128 - 32 * half);
        return Q6Group((lowA & mask) | ((high & Vector256.Create((byte)0x03)) << 4), x, GroupScales(groupScales, 8 * half))
             + Q6Group((lowB & mask) | ((high & Vector256.Create((byte)0x0C)) << 2), x + 32, GroupScales(groupScales, 8 * half + 2))
             + Q6Group((lowA >>> 4) | (high & Vector256.Create((byte)0x30)), x + 64, GroupScales(groupScales, 8 * half + 4))
             + Q6Group((lowB >>> 4) | ((high & Vector256.Create((byte)0xC0)) >>> 2), x + 96, GroupScales(groupScales, 8 * half + 6));
    }

    /// <summary>32 codes q ∈ [0, 63] against 32 activations: Σ_group sc·Σ (q − 32)·q_x in eight int32 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q6Group(Vector256<byte> codes, sbyte* x, Vector256<short> scales)
    {
        var signed = codes.AsSByte() - Vector256.Create((sbyte)32);
        var pairs = Avx2.MultiplyAddAdjacent(Avx2.Abs(signed), Avx2.Sign(Vector256.Load(x), signed));
        return Avx2.MultiplyAddAdjacent(pairs, scales);
    }

    /// <summary>Sixteen int16 lanes: the signed scale of group <paramref name="group"/> in the low eight, of the next group in the high eight.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> GroupScales(Vector128<sbyte> scales, int group) =>
        Avx2.ConvertToVector256Int16(Ssse3.Shuffle(scales, Vector128.Create(
            (sbyte)group, (sbyte)group, (sbyte)group, (sbyte)group, (sbyte)group, (sbyte)group, (sbyte)group, (sbyte)group,
            (sbyte)(group + 1), (sbyte)(group + 1), (sbyte)(group + 1), (sbyte)(group + 1),
            (sbyte)(group + 1), (sbyte)(group + 1), (sbyte)(group + 1), (sbyte)(group + 1))));

    /// <summary>IQ4_NL/IQ4_XS's 16 levels in both 128-bit lanes, so that <c>vpshufb</c> maps 32 nibbles to their levels at once.</summary>
    private static readonly Vector256<sbyte> NonLinearLevels = Vector256.Create(Vector128.Create(GgmlIQuantBlocks.NonLinearLevels));

    /// <summary>The 32 levels (|level| ≤ 127, so <see cref="DotSigned"/> applies) of the nibbles of 16 bytes, in element order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<sbyte> Levels(byte* qs) => Avx2.Shuffle(NonLinearLevels, Nibbles(qs).AsSByte());

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotIQ4_NL(byte* w, sbyte* q, float* scales, int blocks)
    {
        var acc = Vector256<float>.Zero;
        for (int b = 0; b < blocks; b++, w += 18)
        {
            var dot = DotSigned(Levels(w + 2), Vector256.Load(q + 32 * b));
            acc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(dot), Vector256.Create(Fp16(w) * scales[b]), acc);
        }
        return Vector256.Sum(acc);
    }

    /// <summary>IQ4_XS: each sub-block of 32 is an IQ4_NL block whose scale is d·(s − 32); one activation scale per sub-block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotIQ4_XS(byte* w, sbyte* q, float* scales, int blocks)
    {
        var acc = Vector256<float>.Zero;
        for (int b = 0; b < blocks; b++, w += 136, q += 256, scales += 8)
        {
            var block = new ReadOnlySpan<byte>(w, 136);
            float d = Fp16(w);
            for (int sub = 0; sub < 8; sub++)
            {
                var dot = DotSigned(Levels(w + 8 + 16 * sub), Vector256.Load(q + 32 * sub));
                float scale = d * GgmlIQuantBlocks.IQ4_XSScale(block, sub) * scales[sub];
                acc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(dot), Vector256.Create(scale), acc);
            }
        }
        return Vector256.Sum(acc);
    }

    /// <summary>
    /// The eight 6-bit scales (into out[0..7]) and mins (out[8..15]) of a Q4_K super-block (get_scale_min_k4), four bytes
    /// per 32-bit operation: bytes 0–3 hold scales 0–3 and bytes 4–7 mins 0–3 in their low 6 bits; scales and mins 4–7
    /// take their low 4 bits from bytes 8–11 and their top 2 from the top bits of bytes 0–3 and 4–7.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void UnpackScaleMinK4(byte* s, byte* output) => UnpackScaleMinK4(s).Store(output);

    /// <summary>
    /// The same in a register (scales in bytes 0–7, mins in 8–15), built from the four 32-bit results: storing them and
    /// reloading 16 or 8 bytes at once stalls on store forwarding, which cost the Q4_K kernel about a third of its time.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<byte> UnpackScaleMinK4(byte* s)
    {
        uint u0 = *(uint*)s, u1 = *(uint*)(s + 4), u2 = *(uint*)(s + 8);
        return Vector128.Create(u0 & 0x3F3F3F3F, (u2 & 0x0F0F0F0F) | ((u0 >> 6) & 0x03030303) << 4,
            u1 & 0x3F3F3F3F, ((u2 >> 4) & 0x0F0F0F0F) | ((u1 >> 6) & 0x03030303) << 4).AsByte();
    }

    /// <summary>The eight mins m_j (bytes 8–15 of the unpacked scales) times the activation's Σq of their sub-blocks, as floats: the dot's Σ m·Σq term.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> MinimumTerms(Vector128<byte> scalesAndMins, int* sums) =>
        Vector256.ConvertToSingle(Avx2.ConvertToVector256Int32(Sse2.UnpackHigh(scalesAndMins.AsUInt64(), scalesAndMins.AsUInt64()).AsByte()) * Vector256.Load(sums));

    /// <summary>Σ level·q over the 32 nibbles of <paramref name="qs"/> (IQ4_NL's layout: low nibbles first) and 32 activations.</summary>
    private static int LevelDot(ReadOnlySpan<byte> qs, ReadOnlySpan<sbyte> q)
    {
        var levels = GgmlIQuantBlocks.NonLinearLevels;
        int dot = 0;
        for (int l = 0; l < 16; l++) dot += levels[qs[l] & 0xF] * q[l] + levels[qs[l] >> 4] * q[l + 16];
        return dot;
    }

    /// <summary>
    /// The scalar definition: one W row against one quantized x row, each block's integer dot product exact in int,
    /// scaled by the block's fp16 scale(s) and the activation scale, summed in double.
    /// </summary>
    public static float DotReference(TensorType type, ReadOnlySpan<byte> w, ReadOnlySpan<sbyte> q, ReadOnlySpan<float> scales, ReadOnlySpan<int> sums32)
    {
        double sum = 0;
        switch (type)
        {
            case TensorType.Q4_0:
                for (int b = 0; b < q.Length / 32; b++)
                {
                    var block = w.Slice(18 * b, 18);
                    int dot = 0;
                    for (int l = 0; l < 16; l++)
                        dot += ((block[2 + l] & 0xF) - 8) * q[32 * b + l] + ((block[2 + l] >> 4) - 8) * q[32 * b + l + 16];
                    sum += (double)GgmlBlocks.Fp16(block, 0) * scales[b] * dot;
                }
                break;
            case TensorType.Q8_0:
                for (int b = 0; b < q.Length / 32; b++)
                {
                    var block = w.Slice(34 * b, 34);
                    int dot = 0;
                    for (int l = 0; l < 32; l++) dot += (sbyte)block[2 + l] * q[32 * b + l];
                    sum += (double)GgmlBlocks.Fp16(block, 0) * scales[b] * dot;
                }
                break;
            case TensorType.Q4_K:
                {
                    Span<byte> unpacked = stackalloc byte[16];
                    for (int b = 0; b < q.Length / 256; b++)
                    {
                        var block = w.Slice(144 * b, 144);
                        fixed (byte* s = block, o = unpacked) UnpackScaleMinK4(s + 4, o);
                        long dot = 0, minSum = 0;
                        for (int sub = 0; sub < 8; sub++)
                        {
                            int subDot = 0;
                            for (int l = 0; l < 32; l++)
                            {
                                int code = sub % 2 == 0 ? block[16 + 32 * (sub / 2) + l] & 0xF : block[16 + 32 * (sub / 2) + l] >> 4;
                                subDot += code * q[256 * b + 32 * sub + l];
                            }
                            dot += (long)unpacked[sub] * subDot;
                            minSum += (long)unpacked[8 + sub] * sums32[8 * b + sub];
                        }
                        sum += (double)GgmlBlocks.Fp16(block, 0) * scales[b] * dot - (double)GgmlBlocks.Fp16(block, 2) * scales[b] * minSum;
                    }
                    break;
                }
            case TensorType.Q5_K:
                {
                    Span<byte> unpacked = stackalloc byte[16];
                    for (int b = 0; b < q.Length / 256; b++)
                    {
                        var block = w.Slice(176 * b, 176);
                        fixed (byte* s = block, o = unpacked) UnpackScaleMinK4(s + 4, o);
                        long dot = 0, minSum = 0;
                        for (int sub = 0; sub < 8; sub++)
                        {
                            int subDot = 0;
                            for (int l = 0; l < 32; l++)
                            {
                                int nibble = sub % 2 == 0 ? block[48 + 32 * (sub / 2) + l] & 0xF : block[48 + 32 * (sub / 2) + l] >> 4;
                                int code = nibble + ((block[16 + l] >> sub) & 1) * 16;
                                subDot += code * q[256 * b + 32 * sub + l];
                            }
                            dot += (long)unpacked[sub] * subDot;
                            minSum += (long)unpacked[8 + sub] * sums32[8 * b + sub];
                        }
                        sum += (double)GgmlBlocks.Fp16(block, 0) * scales[b] * dot - (double)GgmlBlocks.Fp16(block, 2) * scales[b] * minSum;
                    }
                    break;
                }
            case TensorType.Q6_K:
                for (int b = 0; b < q.Length / 256; b++)
                {
                    var block = w.Slice(210 * b, 210);
                    long dot = 0;
                    for (int e = 0; e < 256; e++)
                    {
                        int half = e / 128, k = e % 128 / 32, l = e % 32;
                        int lowByte = block[64 * half + l + (k % 2) * 32];
                        int code = ((k < 2 ? lowByte & 0xF : lowByte >> 4) | ((block[128 + 32 * half + l] >> (2 * k)) & 3) << 4) - 32;
                        dot += (long)(sbyte)block[192 + e / 16] * code * q[256 * b + e];
                    }
                    sum += (double)GgmlBlocks.Fp16(block, 208) * scales[b] * dot;
                }
                break;
            case TensorType.IQ4_NL:
                for (int b = 0; b < q.Length / 32; b++)
                {
                    var block = w.Slice(18 * b, 18);
                    sum += (double)GgmlBlocks.Fp16(block, 0) * scales[b] * LevelDot(block.Slice(2, 16), q.Slice(32 * b, 32));
                }
                break;
            case TensorType.IQ4_XS:
                for (int b = 0; b < q.Length / 256; b++)
                {
                    var block = w.Slice(136 * b, 136);
                    for (int sub = 0; sub < 8; sub++)
                        sum += (double)GgmlBlocks.Fp16(block, 0) * GgmlIQuantBlocks.IQ4_XSScale(block, sub) * scales[8 * b + sub]
                            * LevelDot(block.Slice(8 + 16 * sub, 16), q.Slice(256 * b + 32 * sub, 32));
                }
                break;
            case TensorType.IQ3_XXS or TensorType.IQ3_S or TensorType.IQ2_XXS or TensorType.IQ2_XS or TensorType.IQ2_S:
                {
                    // The decoded weights (exact: GgmlBlocks) times the int8 activations and their scale per 32.
                    int blockBytes = TensorTypes.BlockBytes(type);
                    Span<float> decoded = stackalloc float[256];
                    for (int b = 0; b < q.Length / 256; b++)
                    {
                        GgmlBlocks.Dequantize(type, w.Slice(blockBytes * b, blockBytes), decoded);
                        for (int k = 0; k < 256; k++) sum += (double)decoded[k] * q[256 * b + k] * scales[8 * b + k / 32];
                    }
                    break;
                }
            default:
                throw new ArgumentException($"{type} has no direct kernel", nameof(type));
        }
        return (float)sum;
    }
}
