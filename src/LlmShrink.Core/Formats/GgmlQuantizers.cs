using System.Buffers.Binary;

namespace LlmShrink.Formats;

/// <summary>
/// Encoders for ggml's 32-element block types, the inverse of <see cref="GgmlBlocks"/>. Each follows the algorithm of
/// llama.cpp's reference quantizer of the same name (<c>quantize_row_*_ref</c> in ggml-quants.c) — the one
/// <c>llama-quantize</c> uses when no importance matrix is given — so files written here quantize a weight the way
/// llama.cpp itself would. Scales are stored as IEEE fp16 rounded to nearest even (GGML_FP32_TO_FP16), and the
/// quants are computed from the float32 scale before that rounding, as the reference does.
/// The K-quants (256-element super-blocks) are in <see cref="GgmlKQuantizers"/>.
/// </summary>
public static class GgmlQuantizers
{
    /// <summary>
    /// Encodes <c>src.Length</c> floats (a whole number of blocks) into the blocks at the start of <paramref name="dst"/>.
    /// Without <paramref name="importance"/> (empty) each block is the reference quantizer's. With one non-negative weight
    /// per element — for a linear layer's row, the mean x_j² of input column j (llama.cpp's imatrix), which makes
    /// Σ_j importance_j·(w_j − ŵ_j)² the diagonal part of the output error ‖(W − Ŵ)X‖² GPTQ minimises — each block is
    /// also searched under that weighted error (<see cref="EncodeWeighted"/>), and whichever of the two blocks decodes
    /// with the smaller weighted error is kept, so the weighted error never exceeds the reference quantizer's.
    /// </summary>
    public static void Quantize(TensorType type, ReadOnlySpan<float> src, Span<byte> dst, ReadOnlySpan<float> importance = default)
    {
        int blockElements = TensorTypes.BlockElements(type);
        int blockBytes = TensorTypes.BlockBytes(type);
        if (blockElements == 1) throw new ArgumentException($"{type} is not a ggml block type", nameof(type));
        if (src.Length % blockElements != 0) throw new ArgumentException($"{src.Length} elements is not a whole number of {type} blocks of {blockElements}", nameof(src));
        int blocks = src.Length / blockElements;
        if (dst.Length < (long)blocks * blockBytes) throw new ArgumentException($"{blocks} {type} blocks need {(long)blocks * blockBytes} bytes, got {dst.Length}", nameof(dst));
        if (!importance.IsEmpty && importance.Length != src.Length) throw new ArgumentException($"{src.Length} importance weights are needed, not {importance.Length}", nameof(importance));
        Span<byte> weighted = stackalloc byte[blockBytes];
        Span<float> decoded = stackalloc float[blockElements];

        for (int b = 0; b < blocks; b++)
        {
            var x = src.Slice(b * blockElements, blockElements);
            var block = dst.Slice(b * blockBytes, blockBytes);
            switch (type)
            {
                case TensorType.Q8_0: EncodeQ8_0(x, block); break;
                case TensorType.Q4_0: EncodeQ4_0(x, block); break;
                case TensorType.Q4_1: EncodeQ4_1(x, block); break;
                case TensorType.Q5_0: EncodeQ5_0(x, block); break;
                case TensorType.Q5_1: EncodeQ5_1(x, block); break;
                case TensorType.Q2_K: GgmlKQuantizers.EncodeQ2_K(x, block); break;
                case TensorType.Q3_K: GgmlKQuantizers.EncodeQ3_K(x, block); break;
                case TensorType.Q4_K: GgmlKQuantizers.EncodeQ4_K(x, block); break;
                case TensorType.Q5_K: GgmlKQuantizers.EncodeQ5_K(x, block); break;
                case TensorType.Q6_K: GgmlKQuantizers.EncodeQ6_K(x, block); break;
                default: throw new ArgumentException($"no encoder for {type}", nameof(type));
            }
            if (importance.IsEmpty) continue;
            var w = importance.Slice(b * blockElements, blockElements);
            if (!w.ContainsAnyExcept(0f))
                continue; // no weight anywhere: every block has error 0
            EncodeWeighted(type, x, w, weighted);
            if (WeightedError(type, weighted, x, w, decoded) < WeightedError(type, block, x, w, decoded)) weighted.CopyTo(block);
        }
    }

    /// <summary>Σ w_j·(x_j − x̂_j)² of one encoded block, in double.</summary>
    public static double WeightedError(TensorType type, ReadOnlySpan<byte> block, ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<float> decoded)
    {
        GgmlBlocks.Dequantize(type, block, decoded);
        double sum = 0;
        for (int j = 0; j < x.Length; j++) sum += w[j] * ((double)decoded[j] - x[j]) * ((double)decoded[j] - x[j]);
        return sum;
    }

    /// <summary>
    /// The importance-weighted encoders, after llama.cpp's imatrix paths (quantize_row_*_impl in ggml-quants.c), with the
    /// importance itself as the weight (llama.cpp multiplies it by √(σ² + x²); here the objective is GPTQ's diagonal):
    /// <list type="bullet">
    /// <item>Q4_0, Q5_0, Q8_0: make_qx_quants — nineteen candidate scales around −maxLevel/max, each refit by weighted
    /// least squares, the best kept (<see cref="GgmlKQuantizers.SearchSymmetricScale"/>). Q8_0 has no imatrix path in
    /// llama.cpp; the same search over [−128, 127] serves it.</item>
    /// <item>Q4_1, Q5_1: make_qkx3_quants — an affine fit over the scale grid (maxLevel − 0.9 + 0.05·k)/(max − min), k ≤ 36
    /// (<see cref="GgmlKQuantizers.SearchScaleMin"/>).</item>
    /// <item>K-quants: the same searches per sub-block inside <see cref="GgmlKQuantizers"/>.</item>
    /// </list>
    /// Once the scale (and offset) are rounded to fp16, every level is re-chosen as the nearest for the stored constants:
    /// with the constants fixed, that minimises each element's error whatever its weight.
    /// </summary>
    private static void EncodeWeighted(TensorType type, ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<byte> block)
    {
        Span<int> q = stackalloc int[32];
        switch (type)
        {
            case TensorType.Q4_0:
            case TensorType.Q5_0:
            case TensorType.Q8_0:
                {
                    int maxLevel = type switch { TensorType.Q4_0 => 8, TensorType.Q5_0 => 16, _ => 128 };
                    float d = WriteFp16(block, 0, GgmlKQuantizers.SearchSymmetricScale(x, w, q, maxLevel));
                    float id = d != 0 ? 1 / d : 0;
                    for (int j = 0; j < 32; j++) q[j] = Math.Clamp((int)MathF.Round(x[j] * id, MidpointRounding.ToEven), -maxLevel, maxLevel - 1) + maxLevel;
                    if (type == TensorType.Q8_0) for (int j = 0; j < 32; j++) block[2 + j] = (byte)(sbyte)(q[j] - maxLevel);
                    else if (type == TensorType.Q4_0) PackNibbles(q, block.Slice(2, 16));
                    else PackFiveBits(q, block.Slice(2, 4), block.Slice(6, 16));
                    break;
                }
            case TensorType.Q4_1:
            case TensorType.Q5_1:
                {
                    int maxLevel = type == TensorType.Q4_1 ? 15 : 31;
                    Span<byte> levels = stackalloc byte[32];
                    float scale = GgmlKQuantizers.SearchScaleMin(x, w, maxLevel, levels, out float negatedMin, -0.9f, 0.05f, 36);
                    float d = WriteFp16(block, 0, scale);
                    float m = WriteFp16(block, 2, -negatedMin);
                    float id = d != 0 ? 1 / d : 0;
                    for (int j = 0; j < 32; j++) q[j] = d != 0 ? Math.Clamp((int)MathF.Round((x[j] - m) * id, MidpointRounding.ToEven), 0, maxLevel) : levels[j];
                    if (type == TensorType.Q4_1) PackNibbles(q, block.Slice(4, 16));
                    else PackFiveBits(q, block.Slice(4, 4), block.Slice(8, 16));
                    break;
                }
            case TensorType.Q2_K: GgmlKQuantizers.EncodeQ2_K(x, block, w); break;
            case TensorType.Q3_K: GgmlKQuantizers.EncodeQ3_K(x, block, w); break;
            case TensorType.Q4_K: GgmlKQuantizers.EncodeQ4_K(x, block, w); break;
            case TensorType.Q5_K: GgmlKQuantizers.EncodeQ5_K(x, block, w); break;
            case TensorType.Q6_K: GgmlKQuantizers.EncodeQ6_K(x, block, w); break;
            default: throw new ArgumentException($"no weighted encoder for {type}", nameof(type));
        }
    }

    /// <summary>ggml's 4-bit packing: byte j holds element j in its low nibble and element j + 16 in its high nibble.</summary>
    internal static void PackNibbles(ReadOnlySpan<int> q, Span<byte> qs)
    {
        for (int j = 0; j < 16; j++) qs[j] = (byte)((q[j] & 0xF) | (q[j + 16] & 0xF) << 4);
    }

    /// <summary>Q5_0/Q5_1: low nibbles as <see cref="PackNibbles"/>, the fifth bit of element i in bit i of the little-endian uint32 qh.</summary>
    internal static void PackFiveBits(ReadOnlySpan<int> q, Span<byte> qh, Span<byte> qs)
    {
        PackNibbles(q, qs);
        uint high = 0;
        for (int j = 0; j < 32; j++) high |= (uint)(q[j] >> 4 & 1) << j;
        BinaryPrimitives.WriteUInt32LittleEndian(qh, high);
    }

    /// <summary>Block types this project can write.</summary>
    public static bool CanEncode(TensorType type) => type is
        TensorType.Q8_0 or TensorType.Q4_0 or TensorType.Q4_1 or TensorType.Q5_0 or TensorType.Q5_1 or
        TensorType.Q2_K or TensorType.Q3_K or TensorType.Q4_K or TensorType.Q5_K or TensorType.Q6_K;

    /// <summary>Stores <paramref name="value"/> as fp16 (round to nearest even) and returns the float32 the decoder will see.</summary>
    internal static float WriteFp16(Span<byte> bytes, int offset, float value)
    {
        Half half = (Half)value;
        BinaryPrimitives.WriteUInt16LittleEndian(bytes[offset..], BitConverter.HalfToUInt16Bits(half));
        return (float)half;
    }

    /// <summary>The largest |x| and the signed element that has it (the first such, as the reference scans).</summary>
    private static (float AbsMax, float SignedMax) AbsMax(ReadOnlySpan<float> x)
    {
        float amax = 0, max = 0;
        foreach (float v in x)
            if (amax < MathF.Abs(v)) { amax = MathF.Abs(v); max = v; }
        return (amax, max);
    }

    private static (float Min, float Max) MinMax(ReadOnlySpan<float> x)
    {
        float min = float.MaxValue, max = -float.MaxValue;
        foreach (float v in x)
        {
            if (v < min) min = v;
            if (v > max) max = v;
        }
        return (min, max);
    }

    /// <summary>quantize_row_q8_0_ref: d = max|x| / 127, q = round(x / d) with halves away from zero (C's roundf).</summary>
    private static void EncodeQ8_0(ReadOnlySpan<float> x, Span<byte> block)
    {
        float d = AbsMax(x).AbsMax / 127;
        float id = d != 0 ? 1 / d : 0;
        WriteFp16(block, 0, d);
        for (int j = 0; j < 32; j++) block[2 + j] = (byte)(sbyte)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero);
    }

    /// <summary>
    /// quantize_row_q4_0_ref: the element of largest magnitude maps to −8 exactly (d = max / −8), so the sign of d
    /// puts the asymmetric end of [−8, 7] on the side of the outlier; q = trunc(x/d + 8.5) clamped to 15.
    /// </summary>
    private static void EncodeQ4_0(ReadOnlySpan<float> x, Span<byte> block)
    {
        float d = AbsMax(x).SignedMax / -8;
        float id = d != 0 ? 1 / d : 0;
        WriteFp16(block, 0, d);
        for (int j = 0; j < 16; j++)
        {
            int low = Math.Min(15, (int)(x[j] * id + 8.5f));
            int high = Math.Min(15, (int)(x[j + 16] * id + 8.5f));
            block[2 + j] = (byte)(low | high << 4);
        }
    }

    /// <summary>quantize_row_q4_1_ref: m = min, d = (max − min) / 15, q = trunc((x − m)/d + 0.5) clamped to 15.</summary>
    private static void EncodeQ4_1(ReadOnlySpan<float> x, Span<byte> block)
    {
        var (min, max) = MinMax(x);
        float d = (max - min) / 15;
        float id = d != 0 ? 1 / d : 0;
        WriteFp16(block, 0, d);
        WriteFp16(block, 2, min);
        for (int j = 0; j < 16; j++)
        {
            int low = Math.Min(15, (int)((x[j] - min) * id + 0.5f));
            int high = Math.Min(15, (int)((x[j + 16] - min) * id + 0.5f));
            block[4 + j] = (byte)(low | high << 4);
        }
    }

    /// <summary>quantize_row_q5_0_ref: as Q4_0 with 5 bits (d = max / −16, q = trunc(x/d + 16.5) ≤ 31); the fifth bit
    /// of element i goes to bit i of the little-endian uint32 qh.</summary>
    private static void EncodeQ5_0(ReadOnlySpan<float> x, Span<byte> block)
    {
        float d = AbsMax(x).SignedMax / -16;
        float id = d != 0 ? 1 / d : 0;
        WriteFp16(block, 0, d);
        uint qh = 0;
        for (int j = 0; j < 16; j++)
        {
            int low = Math.Min(31, (int)(x[j] * id + 16.5f));
            int high = Math.Min(31, (int)(x[j + 16] * id + 16.5f));
            block[6 + j] = (byte)((low & 0xF) | (high & 0xF) << 4);
            qh |= (uint)(low >> 4) << j;
            qh |= (uint)(high >> 4) << (j + 16);
        }
        BinaryPrimitives.WriteUInt32LittleEndian(block[2..], qh);
    }

    /// <summary>quantize_row_q5_1_ref: as Q4_1 with 5 bits (d = (max − min) / 31).</summary>
    private static void EncodeQ5_1(ReadOnlySpan<float> x, Span<byte> block)
    {
        var (min, max) = MinMax(x);
        float d = (max - min) / 31;
        float id = d != 0 ? 1 / d : 0;
        WriteFp16(block, 0, d);
        WriteFp16(block, 2, min);
        uint qh = 0;
        for (int j = 0; j < 16; j++)
        {
            int low = Math.Min(31, (int)((x[j] - min) * id + 0.5f));
            int high = Math.Min(31, (int)((x[j + 16] - min) * id + 0.5f));
            block[8 + j] = (byte)((low & 0xF) | (high & 0xF) << 4);
            qh |= (uint)(low >> 4) << j;
            qh |= (uint)(high >> 4) << (j + 16);
        }
        BinaryPrimitives.WriteUInt32LittleEndian(block[4..], qh);
    }
}
