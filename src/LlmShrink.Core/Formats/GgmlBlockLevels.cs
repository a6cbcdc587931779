using System.Buffers.Binary;

namespace LlmShrink.Formats;

/// <summary>
/// The per-element levels of an encoded ggml block, read and written in place: which grid each sub-block reads its
/// levels against (<see cref="Grid"/>, from the block's stored scales) and where element i's level sits in the
/// block's bits (<see cref="Level"/>, <see cref="SetLevel"/>). With the scales fixed, a quantizer may choose every level
/// itself — GPTQ's rounding with error feedback (<see cref="Compression.Quantization.GgmlGptq"/>) — and the block stays a
/// valid llama.cpp block that decodes to exactly the grid values chosen. Layouts are ggml-common.h's, as
/// <see cref="GgmlBlocks"/> decodes them; levels are stored unsigned (Q8_0's signed byte q as q + 128, Q3_K's q ∈ [−4, 3]
/// as q + 4).
/// </summary>
public static class GgmlBlockLevels
{
    /// <summary>The types whose levels this class can address: every type <see cref="GgmlQuantizers"/> encodes.</summary>
    public static bool Supports(TensorType type) => GgmlQuantizers.CanEncode(type);

    /// <summary>Elements per sub-block, the run that shares one grid: 16 for Q2_K, Q3_K and Q6_K, 32 for Q4_K, Q5_K and the legacy types.</summary>
    public static int SubBlockElements(TensorType type) => type switch
    {
        TensorType.Q2_K or TensorType.Q3_K or TensorType.Q6_K => 16,
        _ when Supports(type) => 32,
        _ => throw Unsupported(type),
    };

    /// <summary>The grid of sub-block <paramref name="subBlock"/> of <paramref name="block"/>, from its stored scales.</summary>
    public static GgmlLevelGrid Grid(TensorType type, ReadOnlySpan<byte> block, int subBlock)
    {
        switch (type)
        {
            case TensorType.Q8_0: return new GgmlLevelGrid(GgmlBlocks.Fp16(block, 0), 128, 0f, 255);
            case TensorType.Q4_0: return new GgmlLevelGrid(GgmlBlocks.Fp16(block, 0), 8, 0f, 15);
            case TensorType.Q5_0: return new GgmlLevelGrid(GgmlBlocks.Fp16(block, 0), 16, 0f, 31);
            case TensorType.Q4_1: return new GgmlLevelGrid(GgmlBlocks.Fp16(block, 0), 0, -GgmlBlocks.Fp16(block, 2), 15);
            case TensorType.Q5_1: return new GgmlLevelGrid(GgmlBlocks.Fp16(block, 0), 0, -GgmlBlocks.Fp16(block, 2), 31);
            case TensorType.Q2_K:
                {
                    int packed = block[subBlock];
                    return new GgmlLevelGrid(GgmlBlocks.Fp16(block, 80) * (packed & 0xF), 0, GgmlBlocks.Fp16(block, 82) * (packed >> 4), 3);
                }
            case TensorType.Q3_K: return new GgmlLevelGrid(GgmlBlocks.Fp16(block, 108) * (GgmlBlocks.Q3KScale(block.Slice(96, 12), subBlock) - 32), 4, 0f, 7);
            case TensorType.Q4_K:
            case TensorType.Q5_K:
                {
                    var (scale, min) = GgmlBlocks.ScaleMinK4(block.Slice(4, 12), subBlock);
                    return new GgmlLevelGrid(GgmlBlocks.Fp16(block, 0) * scale, 0, GgmlBlocks.Fp16(block, 2) * min, type == TensorType.Q4_K ? 15 : 31);
                }
            case TensorType.Q6_K: return new GgmlLevelGrid(GgmlBlocks.Fp16(block, 208) * (sbyte)block[192 + subBlock], 32, 0f, 63);
            default: throw Unsupported(type);
        }
    }

    /// <summary>The stored level of element <paramref name="element"/> of the block.</summary>
    public static int Level(TensorType type, ReadOnlySpan<byte> block, int element)
    {
        var (half, k, l) = (element / 128, element % 128 / 32, element % 32);
        switch (type)
        {
            case TensorType.Q8_0: return (sbyte)block[2 + element] + 128;
            case TensorType.Q4_0: return Nibble(block[2 + element % 16], element >= 16);
            case TensorType.Q4_1: return Nibble(block[4 + element % 16], element >= 16);
            case TensorType.Q5_0: return Nibble(block[6 + element % 16], element >= 16) | FifthBit(block.Slice(2, 4), element);
            case TensorType.Q5_1: return Nibble(block[8 + element % 16], element >= 16) | FifthBit(block.Slice(4, 4), element);
            case TensorType.Q2_K: return block[16 + 32 * half + l] >> 2 * k & 3;
            case TensorType.Q3_K: return (block[32 + 32 * half + l] >> 2 * k & 3) | (block[l] >> element / 32 & 1) << 2;
            case TensorType.Q4_K: return Nibble(block[16 + 32 * (element / 64) + l], element % 64 >= 32);
            case TensorType.Q5_K: return Nibble(block[48 + 32 * (element / 64) + l], element % 64 >= 32) | (block[16 + l] >> element / 32 & 1) << 4;
            case TensorType.Q6_K: return Nibble(block[64 * half + 32 * (k & 1) + l], k >= 2) | (block[128 + 32 * half + l] >> 2 * k & 3) << 4;
            default: throw Unsupported(type);
        }
    }

    /// <summary>Stores <paramref name="level"/> (in [0, the sub-block grid's MaxLevel]) as element <paramref name="element"/>'s level, leaving every other bit of the block as it was.</summary>
    public static void SetLevel(TensorType type, Span<byte> block, int element, int level)
    {
        var (half, k, l) = (element / 128, element % 128 / 32, element % 32);
        switch (type)
        {
            case TensorType.Q8_0: block[2 + element] = (byte)(sbyte)(level - 128); break;
            case TensorType.Q4_0: SetNibble(ref block[2 + element % 16], element >= 16, level); break;
            case TensorType.Q4_1: SetNibble(ref block[4 + element % 16], element >= 16, level); break;
            case TensorType.Q5_0:
                SetNibble(ref block[6 + element % 16], element >= 16, level);
                SetFifthBit(block.Slice(2, 4), element, level);
                break;
            case TensorType.Q5_1:
                SetNibble(ref block[8 + element % 16], element >= 16, level);
                SetFifthBit(block.Slice(4, 4), element, level);
                break;
            case TensorType.Q2_K: SetBits(ref block[16 + 32 * half + l], 2 * k, 3, level); break;
            case TensorType.Q3_K:
                SetBits(ref block[32 + 32 * half + l], 2 * k, 3, level);
                SetBits(ref block[l], element / 32, 1, level >> 2); // set: "do not subtract 4"
                break;
            case TensorType.Q4_K: SetNibble(ref block[16 + 32 * (element / 64) + l], element % 64 >= 32, level); break;
            case TensorType.Q5_K:
                SetNibble(ref block[48 + 32 * (element / 64) + l], element % 64 >= 32, level);
                SetBits(ref block[16 + l], element / 32, 1, level >> 4);
                break;
            case TensorType.Q6_K:
                SetNibble(ref block[64 * half + 32 * (k & 1) + l], k >= 2, level);
                SetBits(ref block[128 + 32 * half + l], 2 * k, 3, level >> 4);
                break;
            default: throw Unsupported(type);
        }
    }

    private static int Nibble(byte b, bool high) => high ? b >> 4 : b & 0xF;

    private static void SetNibble(ref byte b, bool high, int level) => SetBits(ref b, high ? 4 : 0, 0xF, level);

    /// <summary>Bits shift.. of <paramref name="b"/> under <paramref name="mask"/> ← the low bits of <paramref name="value"/>.</summary>
    private static void SetBits(ref byte b, int shift, int mask, int value) => b = (byte)(b & ~(mask << shift) | (value & mask) << shift);

    /// <summary>Q5_0/Q5_1: the fifth bit of element i is bit i of the little-endian uint32 qh.</summary>
    private static int FifthBit(ReadOnlySpan<byte> qh, int element) => (int)(BinaryPrimitives.ReadUInt32LittleEndian(qh) >> element & 1) << 4;

    private static void SetFifthBit(Span<byte> qh, int element, int level) => SetBits(ref qh[element / 8], element % 8, 1, level >> 4);

    private static ArgumentException Unsupported(TensorType type) => new($"{type}: no level layout (the types ggml encodes here: Q2_K…Q6_K, Q4_0…Q5_1, Q8_0)", nameof(type));
}
