using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LlmShrink.Kernels;

/// <summary>
/// The layout the integer prompt kernels read (<see cref="GgmlMatMul"/>'s Q4_0/Q8_0 and K-quants, <see cref="GptqMatMul"/>'s
/// nibbles): 32 codes of each of 8 weight rows re-laid so that 32-bit lane j of vector g holds codes 4g..4g+3 of row j.
/// One <c>vpdpbusd</c> against 4 activation bytes broadcast to every lane then advances all 8 rows at once.
/// </summary>
internal static unsafe class LaneInterleave
{
    /// <summary>Rows r0..r7 (32 codes each) as 8 vectors at <paramref name="destination"/>: an 8×8 transpose of 4-byte groups.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(Vector256<byte> r0, Vector256<byte> r1, Vector256<byte> r2, Vector256<byte> r3,
        Vector256<byte> r4, Vector256<byte> r5, Vector256<byte> r6, Vector256<byte> r7, byte* destination)
    {
        // Pairs of rows, then pairs of pairs (within each 128-bit half), then the two halves.
        var t0 = Avx2.UnpackLow(r0.AsInt32(), r1.AsInt32()); var t1 = Avx2.UnpackHigh(r0.AsInt32(), r1.AsInt32());
        var t2 = Avx2.UnpackLow(r2.AsInt32(), r3.AsInt32()); var t3 = Avx2.UnpackHigh(r2.AsInt32(), r3.AsInt32());
        var t4 = Avx2.UnpackLow(r4.AsInt32(), r5.AsInt32()); var t5 = Avx2.UnpackHigh(r4.AsInt32(), r5.AsInt32());
        var t6 = Avx2.UnpackLow(r6.AsInt32(), r7.AsInt32()); var t7 = Avx2.UnpackHigh(r6.AsInt32(), r7.AsInt32());
        var u0 = Avx2.UnpackLow(t0.AsInt64(), t2.AsInt64()); var u1 = Avx2.UnpackHigh(t0.AsInt64(), t2.AsInt64());
        var u2 = Avx2.UnpackLow(t1.AsInt64(), t3.AsInt64()); var u3 = Avx2.UnpackHigh(t1.AsInt64(), t3.AsInt64());
        var u4 = Avx2.UnpackLow(t4.AsInt64(), t6.AsInt64()); var u5 = Avx2.UnpackHigh(t4.AsInt64(), t6.AsInt64());
        var u6 = Avx2.UnpackLow(t5.AsInt64(), t7.AsInt64()); var u7 = Avx2.UnpackHigh(t5.AsInt64(), t7.AsInt64());
        Avx2.Permute2x128(u0, u4, 0x20).Store((long*)destination);
        Avx2.Permute2x128(u1, u5, 0x20).Store((long*)(destination + 32));
        Avx2.Permute2x128(u2, u6, 0x20).Store((long*)(destination + 64));
        Avx2.Permute2x128(u3, u7, 0x20).Store((long*)(destination + 96));
        Avx2.Permute2x128(u0, u4, 0x31).Store((long*)(destination + 128));
        Avx2.Permute2x128(u1, u5, 0x31).Store((long*)(destination + 160));
        Avx2.Permute2x128(u2, u6, 0x31).Store((long*)(destination + 192));
        Avx2.Permute2x128(u3, u7, 0x31).Store((long*)(destination + 224));
    }
}
