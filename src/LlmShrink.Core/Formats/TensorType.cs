namespace LlmShrink.Formats;

/// <summary>Element encodings a stored tensor can have. Block types follow ggml's definitions (ggml-common.h).</summary>
public enum TensorType
{
    F32, F16, BF16, I8, I16, I32, I64, F64,
    /// <summary>Unsigned bytes: packed codes and positions (2:4-sparse layers), not numbers to compute with.</summary>
    U8,
    Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
    Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
    /// <summary>llama.cpp's I-quants: codes index a non-linear value table (IQ4_*) or a codebook of 4 or 8 values (the rest).</summary>
    IQ4_NL, IQ4_XS, IQ3_XXS, IQ3_S, IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S, IQ1_M,
}

public static class TensorTypes
{
    /// <summary>Elements per block: 1 for plain types, 32 for Q*_0/Q*_1 and IQ4_NL, 256 for K-quants and the other I-quants.</summary>
    public static int BlockElements(TensorType t) => t switch
    {
        TensorType.Q4_0 or TensorType.Q4_1 or TensorType.Q5_0 or TensorType.Q5_1 or TensorType.Q8_0 or TensorType.IQ4_NL => 32,
        TensorType.Q2_K or TensorType.Q3_K or TensorType.Q4_K or TensorType.Q5_K or TensorType.Q6_K => 256,
        TensorType.IQ4_XS or TensorType.IQ3_XXS or TensorType.IQ3_S or TensorType.IQ2_XXS or TensorType.IQ2_XS
            or TensorType.IQ2_S or TensorType.IQ1_S or TensorType.IQ1_M => 256,
        _ => 1,
    };

    /// <summary>Bytes per block (sizes from ggml-common.h; the K-quant super-block is 256 elements).</summary>
    public static int BlockBytes(TensorType t) => t switch
    {
        TensorType.F32 => 4, TensorType.F16 => 2, TensorType.BF16 => 2,
        TensorType.I8 => 1, TensorType.U8 => 1, TensorType.I16 => 2, TensorType.I32 => 4, TensorType.I64 => 8, TensorType.F64 => 8,
        TensorType.Q4_0 => 2 + 16,          // d, 32 nibbles
        TensorType.Q4_1 => 2 + 2 + 16,      // d, m, 32 nibbles
        TensorType.Q5_0 => 2 + 4 + 16,      // d, high bits, 32 nibbles
        TensorType.Q5_1 => 2 + 2 + 4 + 16,  // d, m, high bits, 32 nibbles
        TensorType.Q8_0 => 2 + 32,          // d, 32 int8
        TensorType.Q2_K => 16 + 64 + 2 + 2, // scales, 2-bit quants, d, dmin
        TensorType.Q3_K => 32 + 64 + 12 + 2,// hmask, 2-bit low quants, 6-bit scales, d
        TensorType.Q4_K => 2 + 2 + 12 + 128,// d, dmin, 6-bit scales/mins, nibbles
        TensorType.Q5_K => 2 + 2 + 12 + 32 + 128,
        TensorType.Q6_K => 128 + 64 + 16 + 2, // low 4 bits, high 2 bits, int8 scales, d
        TensorType.IQ4_NL => 2 + 16,             // d, 32 nibbles
        TensorType.IQ4_XS => 2 + 2 + 4 + 128,    // d, high scale bits, low scale nibbles, 256 nibbles
        TensorType.IQ3_XXS => 2 + 64 + 32,       // d, 64 grid indices, 8 × (4-bit scale + 4 × 7 sign bits)
        TensorType.IQ3_S => 2 + 64 + 8 + 32 + 4, // d, grid index low bytes, high bits, signs, 4-bit scales
        TensorType.IQ2_XXS => 2 + 64,            // d, 8 × (4 grid indices + 4-bit scale + 4 × 7 sign bits)
        TensorType.IQ2_XS => 2 + 64 + 8,         // d, 32 × (9-bit grid index + 7 sign bits), 4-bit scales
        TensorType.IQ2_S => 2 + 32 + 32 + 8 + 8, // d, grid index low bytes, signs, high bits, 4-bit scales
        TensorType.IQ1_S => 2 + 32 + 16,         // d, grid index low bytes, 8 × (high bits, 3-bit scale, delta sign)
        TensorType.IQ1_M => 32 + 16 + 8,         // grid index low bytes, high bits + delta signs, 3-bit scales holding d
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    public static bool IsBlockQuantized(TensorType t) => BlockElements(t) > 1;

    /// <summary>Bytes that <paramref name="elements"/> consecutive elements occupy; the count must be a whole number of blocks.</summary>
    public static long ByteCount(TensorType t, long elements)
    {
        long block = BlockElements(t);
        if (elements % block != 0) throw new ArgumentException($"{elements} elements is not a whole number of {t} blocks of {block}");
        return checked(elements / block * BlockBytes(t));
    }

    /// <summary>Storage bits per element, including block scales (e.g. Q4_0 = 4.5).</summary>
    public static double BitsPerElement(TensorType t) => 8.0 * BlockBytes(t) / BlockElements(t);
}
