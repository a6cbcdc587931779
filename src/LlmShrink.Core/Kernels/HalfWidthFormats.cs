using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using LlmShrink.Formats;

namespace LlmShrink.Kernels;

/// <summary>
/// A 16-bit float encoding that <see cref="HalfWidthMatMul{TFormat}"/> widens to float32 in registers. A struct type
/// argument, so the JIT compiles one kernel per format with the widening inlined (no call or branch per vector).
/// </summary>
public unsafe interface IHalfWidthFormat
{
    /// <summary>The tensor type whose values this format widens.</summary>
    static abstract TensorType Stored { get; }

    /// <summary>16 stored values at <paramref name="p"/> as float32 (AVX-512).</summary>
    static abstract Vector512<float> Widen(ushort* p);

    /// <summary>One stored value as float32 (the scalar reference and the tails).</summary>
    static abstract float Widen(ushort bits);

    /// <summary>
    /// 16 stored values as float32 divided by 2^<see cref="DotScaleLog2"/>: what decode's dot products multiply with
    /// activations scaled up by that power of two once per call, which spares a multiply per vector of weights.
    /// </summary>
    static abstract Vector512<float> WidenForDot(ushort* p);

    /// <summary>The power of two <see cref="WidenForDot"/> leaves out (0: none).</summary>
    static abstract int DotScaleLog2 { get; }
}

/// <summary>bfloat16: the top 16 bits of a float32, so widening is exact and costs one shift.</summary>
public readonly unsafe struct Bfloat16 : IHalfWidthFormat
{
    public static TensorType Stored => TensorType.BF16;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Widen(ushort* p) => (Avx512F.ConvertToVector512UInt32(Vector256.Load(p)) << 16).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Widen(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> WidenForDot(ushort* p) => Widen(p);

    public static int DotScaleLog2 => 0;
}

/// <summary>
/// IEEE binary16. .NET exposes no F16C (<c>vcvtph2ps</c>), so the widening is integer work, exact for every value:
/// the exponent and mantissa bits moved up by 13 read as a float32 2¹¹² times too small — for normal numbers because
/// the exponent bias grows from 15 to 127, for subnormals because float32's subnormal scale 2⁻¹⁴⁹ is 2⁻¹¹² of
/// binary16's 2⁻²⁴·2⁻¹³ — so one multiply by 2¹¹² (a power of two: exact) finishes both; infinities and NaNs (exponent
/// 31) take float32's all-ones exponent instead, NaNs quieted as <c>vcvtph2ps</c> and .NET's own conversion do; the
/// sign moves up by 16.
/// </summary>
public readonly unsafe struct Float16 : IHalfWidthFormat
{
    internal const float Rescale = 5.192296858534828e33f; // 2^112

    public static TensorType Stored => TensorType.F16;

    /// <summary>
    /// Every binary16 value widened once (256 KB, as ggml's <c>ggml_table_f32_f16</c>): for the block kernels, which widen
    /// one fp16 scale per block of 32 weights, two instructions (<c>movzx</c>, <c>vmovss</c>) beat the arithmetic below,
    /// whose rare-case branch the JIT laid out as two taken jumps per value (JIT disassembly, .NET 10).
    /// </summary>
    public static readonly float* Table = BuildTable();

    private static float* BuildTable()
    {
        var table = (float*)NativeMemory.AlignedAlloc(65536 * sizeof(float), 64);
        for (int bits = 0; bits < 65536; bits++) table[bits] = Widen((ushort)bits);
        return table;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Widen(ushort* p)
    {
        var h = Avx512F.ConvertToVector512UInt32(Vector256.Load(p));
        var magnitude = h & Vector512.Create(0x7FFFu);
        var shifted = magnitude << 13;
        var finite = (shifted.AsSingle() * Vector512.Create(Rescale)).AsUInt32();
        var quiet = Vector512.GreaterThan(magnitude, Vector512.Create(0x7C00u)) & Vector512.Create(0x00400000u);
        var special = shifted | Vector512.Create(0x7F800000u) | quiet;
        var widened = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(magnitude, Vector512.Create(0x7C00u)), special, finite);
        return (widened | ((h & Vector512.Create(0x8000u)) << 16)).AsSingle();
    }

    /// <summary>The same in scalar code, inlined (.NET's own <c>(float)Half</c> is a call per value: JIT disassembly, .NET 10).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Widen(ushort bits)
    {
        uint magnitude = bits & 0x7FFFu, shifted = magnitude << 13;
        uint widened = magnitude < 0x7C00u ? BitConverter.SingleToUInt32Bits(BitConverter.UInt32BitsToSingle(shifted) * Rescale)
            : shifted | 0x7F800000u | (magnitude > 0x7C00u ? 0x00400000u : 0u);
        return BitConverter.UInt32BitsToSingle(widened | (uint)(bits & 0x8000) << 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> WidenForDot(ushort* p) => Widen(p);

    public static int DotScaleLog2 => 0;
}

/// <summary>
/// IEEE binary16 known to hold no infinity or NaN (<see cref="HoldsOnlyFinite"/>, checked once when a layer is built):
/// then <see cref="Float16"/>'s rescaling alone is exact, and the sign can ride along — 16 values sign-extended
/// (<c>vpmovsxwd</c>) and shifted up by 13 keep the sign in bit 31 with three copies of it in bits 28–30, which one
/// mask clears, and the multiply by 2¹¹² keeps the sign. Four instructions per 16 weights instead of twelve: F16
/// generation is bound by this widening, not by memory (no F16C in .NET 10). Decode leaves even the multiply out
/// (<see cref="WidenForDot"/>): its activations carry the 2¹¹² instead, once per call.
/// </summary>
public readonly unsafe struct FiniteFloat16 : IHalfWidthFormat
{
    public static TensorType Stored => TensorType.F16;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Widen(ushort* p) => WidenForDot(p) * Vector512.Create(Float16.Rescale);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Widen(ushort bits) => Float16.Widen(bits);

    /// <summary>
    /// The value 2¹¹² times too small, exactly (a binary16 subnormal becomes a float32 subnormal with all its bits):
    /// three instructions per 16 weights.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> WidenForDot(ushort* p)
    {
        var shifted = Avx512F.ConvertToVector512Int32(Vector256.Load((short*)p)) << 13;
        return (shifted & Vector512.Create(unchecked((int)0x8FFFFFFF))).AsSingle();
    }

    public static int DotScaleLog2 => 112;

    /// <summary>Whether none of <paramref name="count"/> binary16 values has the all-ones exponent (infinity, NaN).</summary>
    public static bool HoldsOnlyFinite(ushort* values, long count)
    {
        long i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var exponent = Vector512.Create((ushort)0x7C00);
            for (; i + 32 <= count; i += 32)
                if (Vector512.EqualsAny(Vector512.Load(values + i) & exponent, exponent)) return false;
        }
        for (; i < count; i++)
            if ((values[i] & 0x7C00) == 0x7C00) return false;
        return true;
    }
}
