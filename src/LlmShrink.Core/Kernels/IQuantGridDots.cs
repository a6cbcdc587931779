using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using LlmShrink.Formats;

namespace LlmShrink.Kernels;

/// <summary>
/// <see cref="GgmlMatMul"/>'s dot products for the codebook I-quants (IQ3_XXS, IQ3_S, IQ2_XXS, IQ2_XS, IQ2_S; layouts
/// in <see cref="GgmlIQuantBlocks"/>), one W row against one int8 x row with a scale per 32. Each group of 8 weights is
/// a grid entry of 8 unsigned magnitudes (two entries of 4 for IQ3) and 8 signs; rather than negating weights, the signs
/// are moved onto x (x ^ m − m with m = −1 where negative, exact since |x| ≤ 127), so that the magnitudes go straight into
/// the unsigned operand of the u8×s8 dot. Magnitudes are at most 62, so no pair sum saturates int16.
/// </summary>
internal static unsafe class IQuantGridDots
{
    private static readonly ulong[] Iq2XxsGrid = MemoryMarshal.Cast<byte, ulong>(IQuantGrids.Iq2Xxs).ToArray();
    private static readonly ulong[] Iq2XsGrid = MemoryMarshal.Cast<byte, ulong>(IQuantGrids.Iq2Xs).ToArray();
    private static readonly ulong[] Iq2SGrid = MemoryMarshal.Cast<byte, ulong>(IQuantGrids.Iq2S).ToArray();
    private static readonly uint[] Iq3XxsGrid = MemoryMarshal.Cast<byte, uint>(IQuantGrids.Iq3Xxs).ToArray();
    private static readonly uint[] Iq3SGrid = MemoryMarshal.Cast<byte, uint>(IQuantGrids.Iq3S).ToArray();

    /// <summary>Byte j of entry s is 0xFF where bit j of the sign byte s is set, else 0.</summary>
    private static readonly ulong[] SignMasks = Enumerable.Range(0, 256)
        .Select(s => Enumerable.Range(0, 8).Aggregate(0ul, (mask, j) => (s >> j & 1) != 0 ? mask | 0xFFul << 8 * j : mask)).ToArray();

    /// <summary>Sign mask of a group whose 7 stored sign bits are completed by parity (<see cref="GgmlIQuantBlocks.EightSigns"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong SevenSignMask(uint sevenBits) => SignMasks[GgmlIQuantBlocks.EightSigns(sevenBits & 127)];

    /// <summary>Eight int32 lanes, lanes 0–3 summing weights 0–15 and lanes 4–7 weights 16–31, of Σ magnitude·sign·x.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> SignedDot(Vector256<ulong> magnitudes, Vector256<ulong> signMasks, sbyte* x)
    {
        var m = signMasks.AsSByte();
        var signedX = (Vector256.Load(x) ^ m) - m;
        return GgmlMatMul.DotUnsigned(magnitudes.AsByte(), signedX);
    }

    /// <summary>Two IQ3 grid entries of 4 magnitudes as one group of 8.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Pair(uint[] grid, int first, int second) => grid[first] | (ulong)grid[second] << 32;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float DotIQ2_XXS(byte* w, sbyte* q, float* scales, int blocks)
    {
        var acc = Vector256<float>.Zero;
        for (int b = 0; b < blocks; b++, w += 66, q += 256, scales += 8)
        {
            float d = Float16.Table[*(ushort*)w];
            for (int sub = 0; sub < 8; sub++)
            {
                byte* indices = w + 2 + 8 * sub;
                uint signsAndScale = Unsafe.ReadUnaligned<uint>(indices + 4);
                var magnitudes = Vector256.Create(Iq2XxsGrid[indices[0]], Iq2XxsGrid[indices[1]], Iq2XxsGrid[indices[2]], Iq2XxsGrid[indices[3]]);
                var signs = Vector256.Create(SevenSignMask(signsAndScale), SevenSignMask(signsAndScale >> 7), SevenSignMask(signsAndScale >> 14), SevenSignMask(signsAndScale >> 21));
                float db = d * (0.5f + (signsAndScale >> 28)) * 0.25f;
                acc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(SignedDot(magnitudes, signs, q + 32 * sub)), Vector256.Create(db * scales[sub]), acc);
            }
        }
        return Vector256.Sum(acc);
    }

    /// <summary>IQ2_XS and IQ2_S scale the two halves of a sub-block apart: lanes 0–3 by the low nibble's scale, 4–7 by the high.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> HalfScales(float d, byte packed, float activationScale) =>
        Vector256.Create(Vector128.Create(d * (0.5f + (packed & 0xF)) * 0.25f * activationScale),
                         Vector128.Create(d * (0.5f + (packed >> 4)) * 0.25f * activationScale));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float DotIQ2_XS(byte* w, sbyte* q, float* scales, int blocks)
    {
        var acc = Vector256<float>.Zero;
        for (int b = 0; b < blocks; b++, w += 74, q += 256, scales += 8)
        {
            float d = Float16.Table[*(ushort*)w];
            for (int sub = 0; sub < 8; sub++)
            {
                ushort* groups = (ushort*)(w + 2) + 4 * sub;
                var magnitudes = Vector256.Create(Iq2XsGrid[groups[0] & 511], Iq2XsGrid[groups[1] & 511], Iq2XsGrid[groups[2] & 511], Iq2XsGrid[groups[3] & 511]);
                var signs = Vector256.Create(SevenSignMask((uint)groups[0] >> 9), SevenSignMask((uint)groups[1] >> 9), SevenSignMask((uint)groups[2] >> 9), SevenSignMask((uint)groups[3] >> 9));
                acc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(SignedDot(magnitudes, signs, q + 32 * sub)), HalfScales(d, w[66 + sub], scales[sub]), acc);
            }
        }
        return Vector256.Sum(acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float DotIQ2_S(byte* w, sbyte* q, float* scales, int blocks)
    {
        var acc = Vector256<float>.Zero;
        for (int b = 0; b < blocks; b++, w += 82, q += 256, scales += 8)
        {
            float d = Float16.Table[*(ushort*)w];
            for (int sub = 0; sub < 8; sub++)
            {
                byte* low = w + 2 + 4 * sub, signs = w + 34 + 4 * sub;
                int high = w[66 + sub];
                var magnitudes = Vector256.Create(Iq2SGrid[low[0] | (high & 3) << 8], Iq2SGrid[low[1] | (high >> 2 & 3) << 8],
                                                  Iq2SGrid[low[2] | (high >> 4 & 3) << 8], Iq2SGrid[low[3] | (high >> 6 & 3) << 8]);
                var masks = Vector256.Create(SignMasks[signs[0]], SignMasks[signs[1]], SignMasks[signs[2]], SignMasks[signs[3]]);
                acc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(SignedDot(magnitudes, masks, q + 32 * sub)), HalfScales(d, w[74 + sub], scales[sub]), acc);
            }
        }
        return Vector256.Sum(acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float DotIQ3_XXS(byte* w, sbyte* q, float* scales, int blocks)
    {
        var acc = Vector256<float>.Zero;
        for (int b = 0; b < blocks; b++, w += 98, q += 256, scales += 8)
        {
            float d = Float16.Table[*(ushort*)w];
            for (int sub = 0; sub < 8; sub++)
            {
                byte* i = w + 2 + 8 * sub;
                uint signsAndScale = Unsafe.ReadUnaligned<uint>(w + 66 + 4 * sub);
                var magnitudes = Vector256.Create(Pair(Iq3XxsGrid, i[0], i[1]), Pair(Iq3XxsGrid, i[2], i[3]), Pair(Iq3XxsGrid, i[4], i[5]), Pair(Iq3XxsGrid, i[6], i[7]));
                var signs = Vector256.Create(SevenSignMask(signsAndScale), SevenSignMask(signsAndScale >> 7), SevenSignMask(signsAndScale >> 14), SevenSignMask(signsAndScale >> 21));
                float db = d * (0.5f + (signsAndScale >> 28)) * 0.5f;
                acc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(SignedDot(magnitudes, signs, q + 32 * sub)), Vector256.Create(db * scales[sub]), acc);
            }
        }
        return Vector256.Sum(acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float DotIQ3_S(byte* w, sbyte* q, float* scales, int blocks)
    {
        var acc = Vector256<float>.Zero;
        for (int b = 0; b < blocks; b++, w += 110, q += 256, scales += 8)
        {
            float d = Float16.Table[*(ushort*)w];
            for (int sub = 0; sub < 8; sub++)
            {
                byte* low = w + 2 + 8 * sub, signs = w + 74 + 4 * sub;
                int high = w[66 + sub];
                // Index k's ninth bit is bit k of high, moved to bit 8.
                var magnitudes = Vector256.Create(Pair(Iq3SGrid, low[0] | (high << 8 & 256), low[1] | (high << 7 & 256)),
                                                  Pair(Iq3SGrid, low[2] | (high << 6 & 256), low[3] | (high << 5 & 256)),
                                                  Pair(Iq3SGrid, low[4] | (high << 4 & 256), low[5] | (high << 3 & 256)),
                                                  Pair(Iq3SGrid, low[6] | (high << 2 & 256), low[7] | (high << 1 & 256)));
                var masks = Vector256.Create(SignMasks[signs[0]], SignMasks[signs[1]], SignMasks[signs[2]], SignMasks[signs[3]]);
                float db = d * (1 + 2 * (w[106 + sub / 2] >> 4 * (sub % 2) & 0xF));
                acc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(SignedDot(magnitudes, masks, q + 32 * sub)), Vector256.Create(db * scales[sub]), acc);
            }
        }
        return Vector256.Sum(acc);
    }
}
