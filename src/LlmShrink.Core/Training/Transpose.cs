using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using LlmShrink.Kernels;

namespace LlmShrink.Training;

/// <summary>
/// dst[c, r] = src[r, c] for a row-major [rows, cols] matrix: the transposes that let <see cref="LinearOp"/>'s backward
/// run on <see cref="MatMul"/> (dYᵀ and Xᵀ for dW, Wᵀ for dX: on tinylit-8m at 16×256 tokens, about 20 M floats per
/// block and 18 M for lm_head, each way, per step).
/// <para>Bands of 64 source rows are shared out on the <see cref="WorkerPool"/>, and each band is taken in 16×16 blocks
/// held in registers (four rounds of AVX-512 shuffles), so every cache line is read or written whole by vector loads
/// and stores. Against the former scalar 16×16 tiles, one thread, on the shared Zen 4 (best of 13): 4096×768
/// 2.2–2.9 → 1.4–1.5 ms, 4096×4096 (lm_head's dY) 42–97 → 16–21 ms, 4096×256 unchanged at 0.6 ms.</para>
/// </summary>
internal static unsafe class Transpose
{
    private const int Block = 16;
    private const int Band = 64;

    public static void Apply(ReadOnlySpan<float> source, int rows, int cols, Span<float> destination)
    {
        if (source.Length < (long)rows * cols || destination.Length < (long)rows * cols) throw new ArgumentException($"transpose of a {rows}×{cols} matrix: buffers too short");
        fixed (float* src = source, dst = destination)
            WorkerPool.Shared.For((rows + Band - 1) / Band, new Bands(src, dst, rows, cols));
    }

    /// <summary>The scalar definition, which the tests compare <see cref="Apply"/> against.</summary>
    public static void Reference(ReadOnlySpan<float> source, int rows, int cols, Span<float> destination)
    {
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) destination[c * rows + r] = source[r * cols + c];
    }

    private sealed class Bands(float* src, float* dst, int rows, int cols) : IParallelWork
    {
        private readonly float* _src = src, _dst = dst;

        public void Execute(int begin, int end, int worker)
        {
            bool blocks = Avx512F.IsSupported;
            int rBegin = begin * Band, rEnd = Math.Min(end * Band, rows);
            for (int b0 = rBegin; b0 < rEnd; b0 += Band)
                for (int c0 = 0; c0 < cols; c0 += Block)
                {
                    int c1 = Math.Min(c0 + Block, cols), bEnd = Math.Min(b0 + Band, rEnd);
                    for (int r0 = b0; r0 < bEnd; r0 += Block)
                    {
                        int r1 = Math.Min(r0 + Block, bEnd);
                        if (blocks && c1 - c0 == Block && r1 - r0 == Block) Block16(_src + (long)r0 * cols + c0, cols, _dst + (long)c0 * rows + r0, rows);
                        else // ragged edges (and machines without AVX-512): the block float by float
                            for (int c = c0; c < c1; c++)
                                for (int r = r0; r < r1; r++) _dst[(long)c * rows + r] = _src[(long)r * cols + c];
                    }
                }
        }
    }

    /// <summary>
    /// The 16×16 block at <paramref name="s"/> (row stride <paramref name="cols"/>) transposed to <paramref name="d"/>
    /// (row stride <paramref name="rows"/>). Rows a…p: unpack pairs (a0 b0 a1 b1 per 128-bit lane), shuffle pairs of those
    /// into columns of 4 (a0 b0 c0 d0 | a4 b4 c4 d4 | a8… | a12…), then two rounds of 128-bit lane shuffles gather the
    /// four quarters of each column.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Block16(float* s, int cols, float* d, int rows)
    {
        // Rows 4k…4k+3 to the four "column quarter" vectors q[4k + j] = (col j, 4+j, 8+j, 12+j of those rows).
        Quarters(s, cols, out var q0, out var q1, out var q2, out var q3);
        Quarters(s + 4 * cols, cols, out var q4, out var q5, out var q6, out var q7);
        Quarters(s + 8 * cols, cols, out var q8, out var q9, out var q10, out var q11);
        Quarters(s + 12 * cols, cols, out var q12, out var q13, out var q14, out var q15);
        // 0x88 takes 128-bit lanes 0 and 2 of each operand, 0xDD lanes 1 and 3.
        Vector512<float> h0 = Avx512F.Shuffle4x128(q0, q4, 0x88), h4 = Avx512F.Shuffle4x128(q0, q4, 0xDD);   // cols 0|8, 4|12 of rows 0–7
        Vector512<float> h1 = Avx512F.Shuffle4x128(q1, q5, 0x88), h5 = Avx512F.Shuffle4x128(q1, q5, 0xDD);
        Vector512<float> h2 = Avx512F.Shuffle4x128(q2, q6, 0x88), h6 = Avx512F.Shuffle4x128(q2, q6, 0xDD);
        Vector512<float> h3 = Avx512F.Shuffle4x128(q3, q7, 0x88), h7 = Avx512F.Shuffle4x128(q3, q7, 0xDD);
        Vector512<float> h8 = Avx512F.Shuffle4x128(q8, q12, 0x88), h12 = Avx512F.Shuffle4x128(q8, q12, 0xDD); // rows 8–15
        Vector512<float> h9 = Avx512F.Shuffle4x128(q9, q13, 0x88), h13 = Avx512F.Shuffle4x128(q9, q13, 0xDD);
        Vector512<float> h10 = Avx512F.Shuffle4x128(q10, q14, 0x88), h14 = Avx512F.Shuffle4x128(q10, q14, 0xDD);
        Vector512<float> h11 = Avx512F.Shuffle4x128(q11, q15, 0x88), h15 = Avx512F.Shuffle4x128(q11, q15, 0xDD);
        Avx512F.Shuffle4x128(h0, h8, 0x88).Store(d);
        Avx512F.Shuffle4x128(h1, h9, 0x88).Store(d + rows);
        Avx512F.Shuffle4x128(h2, h10, 0x88).Store(d + 2 * rows);
        Avx512F.Shuffle4x128(h3, h11, 0x88).Store(d + 3 * rows);
        Avx512F.Shuffle4x128(h4, h12, 0x88).Store(d + 4 * rows);
        Avx512F.Shuffle4x128(h5, h13, 0x88).Store(d + 5 * rows);
        Avx512F.Shuffle4x128(h6, h14, 0x88).Store(d + 6 * rows);
        Avx512F.Shuffle4x128(h7, h15, 0x88).Store(d + 7 * rows);
        Avx512F.Shuffle4x128(h0, h8, 0xDD).Store(d + 8 * rows);
        Avx512F.Shuffle4x128(h1, h9, 0xDD).Store(d + 9 * rows);
        Avx512F.Shuffle4x128(h2, h10, 0xDD).Store(d + 10 * rows);
        Avx512F.Shuffle4x128(h3, h11, 0xDD).Store(d + 11 * rows);
        Avx512F.Shuffle4x128(h4, h12, 0xDD).Store(d + 12 * rows);
        Avx512F.Shuffle4x128(h5, h13, 0xDD).Store(d + 13 * rows);
        Avx512F.Shuffle4x128(h6, h14, 0xDD).Store(d + 14 * rows);
        Avx512F.Shuffle4x128(h7, h15, 0xDD).Store(d + 15 * rows);
    }

    /// <summary>Four rows a, b, c, e to qj = (a_j b_j c_j e_j | a_{4+j} … | a_{8+j} … | a_{12+j} …) for j &lt; 4.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Quarters(float* s, int cols, out Vector512<float> q0, out Vector512<float> q1, out Vector512<float> q2, out Vector512<float> q3)
    {
        Vector512<float> a = Vector512.Load(s), b = Vector512.Load(s + cols), c = Vector512.Load(s + 2 * cols), e = Vector512.Load(s + 3 * cols);
        Vector512<float> ab0 = Avx512F.UnpackLow(a, b), ab1 = Avx512F.UnpackHigh(a, b); // a0 b0 a1 b1 | …, a2 b2 a3 b3 | …
        Vector512<float> ce0 = Avx512F.UnpackLow(c, e), ce1 = Avx512F.UnpackHigh(c, e);
        q0 = Avx512F.Shuffle(ab0, ce0, 0x44); // elements 0, 1 of each pair: a0 b0 c0 e0
        q1 = Avx512F.Shuffle(ab0, ce0, 0xEE); // elements 2, 3: a1 b1 c1 e1
        q2 = Avx512F.Shuffle(ab1, ce1, 0x44);
        q3 = Avx512F.Shuffle(ab1, ce1, 0xEE);
    }
}
