using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;

namespace LlmShrink.Compression.Quantization;

/// <summary>
/// The four tensors a GPTQ (v1, AutoGPTQ/GPTQModel "gptq" format) checkpoint stores for one linear layer
/// with in → out features:
///   qweight int32 [in·bits/32, out]      codes packed along the INPUT dimension,
///   qzeros  int32 [groups, out·bits/32]  zero points packed along the OUTPUT dimension, stored as zero − 1,
///   scales  F16   [groups, out],
///   g_idx   int32 [in]                   group of each input column.
/// </summary>
public sealed record GptqTensors(int Bits, int InFeatures, int OutFeatures, int GroupCount,
    int[] QWeight, int[] QZeros, Half[] Scales, int[] GIdx);

/// <summary>
/// Packs a <see cref="QuantizedMatrix"/> into GPTQ v1 tensors and back, bit-for-bit as AutoGPTQ's
/// QuantLinear.pack lays them out.
///
/// Every packed column (of qweight) and row (of qzeros) is a little-endian bit stream: value k occupies
/// bits [k·b, k·b + b) of the stream, word w holding stream bits [32w, 32w + 32). For 2, 4 and 8 bits that
/// is 32/b whole values per word. For 3 bits, 32 values fill 3 words and values 10 and 21 straddle a word
/// boundary (bits 30–31 | 0, and 31 | 0–1) — exactly AutoGPTQ's hand-unrolled 3-bit packing.
///
/// GPTQ v1 stores zero − 1 (a historical off-by-one that kernels undo by adding 1). It is stored modulo
/// 2^b here, so an asymmetric zero of 0 is written as 2^b − 1 and unpacks back to 0; readers that add 1
/// without wrapping see 2^b instead (the v1 format cannot express a zero of 0).
/// </summary>
public static class GptqPacking
{
    public static GptqTensors Pack(QuantizedMatrix m)
    {
        int bits = m.Scheme.Bits, inF = m.Columns, outF = m.Rows, groups = m.GroupCount;
        CheckShape(bits, inF, outF);

        // qweight: column o of the [in·bits/32, out] tensor is the stream of codes W[o, 0..in).
        int weightWords = inF * bits / 32;
        var qweight = new int[(long)weightWords * outF];
        for (int o = 0; o < outF; o++)
            for (int i = 0; i < inF; i++)
                Put(qweight, wordStride: outF, wordOffset: o, index: i, bits, m.Codes[o * inF + i]);

        // qzeros: row g of the [groups, out·bits/32] tensor is the stream of (zero − 1) mod 2^b over outputs.
        int zeroWords = outF * bits / 32;
        var qzeros = new int[(long)groups * zeroWords];
        for (int g = 0; g < groups; g++)
            for (int o = 0; o < outF; o++)
                Put(qzeros, wordStride: 1, wordOffset: g * zeroWords, index: o, bits,
                    (m.Zeros[g * outF + o] - 1) & m.Scheme.MaxCode);

        var scales = new Half[m.Scales.Length];
        for (int k = 0; k < scales.Length; k++) scales[k] = (Half)m.Scales[k];

        return new GptqTensors(bits, inF, outF, groups, qweight, qzeros, scales, (int[])m.GroupIndex.Clone());
    }

    /// <summary>
    /// Rebuilds the matrix; <paramref name="scheme"/> says what the checkpoint's config declares (bits,
    /// sym, group size), which the tensors alone do not record.
    /// </summary>
    public static QuantizedMatrix Unpack(GptqTensors t, QuantScheme scheme)
    {
        int bits = t.Bits, inF = t.InFeatures, outF = t.OutFeatures, groups = t.GroupCount;
        if (scheme.Bits != bits)
            throw new ShrinkException($"GPTQ tensors: packed with {bits} bits, scheme says {scheme.Bits}");
        CheckShape(bits, inF, outF);
        if (groups <= 0 || t.QWeight.Length != (long)inF * bits / 32 * outF || t.QZeros.Length != (long)groups * (outF * bits / 32) ||
            t.Scales.Length != (long)groups * outF || t.GIdx.Length != inF)
            throw new ShrinkException($"GPTQ tensors: sizes do not match in={inF}, out={outF}, groups={groups}, bits={bits}");
        foreach (int g in t.GIdx)
            if ((uint)g >= (uint)groups)
                throw new ShrinkException($"GPTQ tensors: g_idx value {g} is outside 0..{groups - 1}");

        int maxCode = scheme.MaxCode, zeroWords = outF * bits / 32;
        var codes = new byte[(long)outF * inF];
        if (32 % bits == 0) UnpackWholeWords(t.QWeight, codes, bits, inF, outF);
        else
            for (int o = 0; o < outF; o++)
                for (int i = 0; i < inF; i++)
                    codes[o * inF + i] = (byte)Get(t.QWeight, wordStride: outF, wordOffset: o, index: i, bits);

        var zeros = new int[groups * outF];
        var scales = new float[groups * outF];
        for (int g = 0; g < groups; g++)
            for (int o = 0; o < outF; o++)
            {
                zeros[g * outF + o] = (Get(t.QZeros, wordStride: 1, wordOffset: g * zeroWords, index: o, bits) + 1) & maxCode;
                scales[g * outF + o] = (float)t.Scales[g * outF + o];
            }
        return new QuantizedMatrix(outF, inF, scheme, groups, codes, scales, zeros, (int[])t.GIdx.Clone());
    }

    /// <summary>
    /// codes[o, i] for 2, 4 and 8 bits, whose words hold whole values: 64 outputs at a time (their code rows, 64·in
    /// bytes, stay in L2), qweight's word rows are read 64 contiguous words at a time, and each word spreads into 32/b
    /// code bytes with one <c>pdep</c> per 8 codes. Walking each output's column of words, one value at a time, took
    /// 2.7 s of the 9.3 s that building a 4-bit Llama-3.2-1B shape took (all of it takes 1.9 s now).
    /// Optimized from the first call: it runs only a few hundred times per model, too few for the JIT's tiers.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void UnpackWholeWords(int[] qweight, byte[] codes, int bits, int inF, int outF)
    {
        const int Outputs = 64;
        int perWord = 32 / bits, wordRows = inF / perWord;
        ulong byteMask = 0x0101_0101_0101_0101UL * ((1UL << bits) - 1); // the low b bits of each byte
        fixed (int* words = qweight)
        fixed (byte* output = codes)
            for (int o0 = 0; o0 < outF; o0 += Outputs)
                for (int r = 0; r < wordRows; r++)
                    for (int o = o0; o < Math.Min(o0 + Outputs, outF); o++)
                    {
                        uint word = (uint)words[(long)r * outF + o];
                        byte* to = output + (long)o * inF + r * perWord;
                        if (bits == 8) *(uint*)to = word; // little-endian: value k is byte k
                        else
                            for (int part = 0; part < perWord / 8; part++, word >>= 8 * bits) // 8 values of b bits → 8 bytes
                                *(ulong*)(to + 8 * part) = Spread(word, byteMask, bits);
                    }
    }

    /// <summary>The low 8 values of b bits in <paramref name="word"/>, one per byte (value k in byte k).</summary>
    static ulong Spread(uint word, ulong byteMask, int bits) =>
        Bmi2.X64.IsSupported ? Bmi2.X64.ParallelBitDeposit(word, byteMask) : SpreadReference(word, bits);

    /// <summary>What <c>pdep</c> computes in <see cref="Spread"/>, value by value.</summary>
    internal static ulong SpreadReference(uint word, int bits)
    {
        ulong spread = 0;
        for (int k = 0; k < 8; k++) spread |= (ulong)((word >> (k * bits)) & ((1u << bits) - 1)) << (8 * k);
        return spread;
    }

    static void CheckShape(int bits, int inF, int outF)
    {
        // Whole words along both packed dimensions: in·bits and out·bits must be multiples of 32.
        if (inF <= 0 || outF <= 0 || inF * bits % 32 != 0 || outF * bits % 32 != 0)
            throw new ShrinkException($"GPTQ packing: {bits}-bit needs in·bits and out·bits to be multiples of 32 (in={inF}, out={outF})");
    }

    /// <summary>Writes value number <paramref name="index"/> of a bit stream whose word w is at words[wordOffset + w·wordStride].</summary>
    static void Put(int[] words, int wordStride, int wordOffset, int index, int bits, int value)
    {
        int bit = index * bits, word = bit >> 5, shift = bit & 31;
        words[wordOffset + word * wordStride] |= (int)((uint)value << shift);
        if (shift + bits > 32) // the value straddles into the next word (3-bit only)
            words[wordOffset + (word + 1) * wordStride] |= (int)((uint)value >> (32 - shift));
    }

    static int Get(int[] words, int wordStride, int wordOffset, int index, int bits)
    {
        int bit = index * bits, word = bit >> 5, shift = bit & 31;
        ulong pair = (uint)words[wordOffset + word * wordStride];
        if (shift + bits > 32)
            pair |= (ulong)(uint)words[wordOffset + (word + 1) * wordStride] << 32;
        return (int)((pair >> shift) & ((1u << bits) - 1));
    }
}
