using LlmShrink.Compression.Quantization;
using Xunit;

namespace LlmShrink.Tests;

public class QuantizationPackingTests
{
    static QuantizedMatrix RandomMatrix(int bits, int rows, int columns, int groupSize, bool shuffledGroups, int seed)
    {
        var rng = new Random(seed);
        var scheme = QuantScheme.Grouped(bits, groupSize, symmetric: false);
        var m = QuantizedMatrix.Create(rows, columns, scheme);
        for (int k = 0; k < m.Codes.Length; k++) m.Codes[k] = (byte)rng.Next(1 << bits);
        for (int k = 0; k < m.Scales.Length; k++)
        {
            m.Scales[k] = (float)(Half)(rng.NextDouble() * 0.1 + 1e-3);
            m.Zeros[k] = rng.Next(1 << bits); // includes 0 and the maximum
        }
        if (shuffledGroups) rng.Shuffle(m.GroupIndex);
        return m;
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(8)]
    public void PackThenUnpackIsExact(int bits)
    {
        foreach (bool shuffled in new[] { false, true })
        {
            var m = RandomMatrix(bits, rows: 64, columns: 256, groupSize: 64, shuffled, seed: bits);
            var packed = GptqPacking.Pack(m);
            Assert.Equal(256 * bits / 32 * 64, packed.QWeight.Length);
            Assert.Equal(4 * (64 * bits / 32), packed.QZeros.Length);
            var back = GptqPacking.Unpack(packed, m.Scheme);
            Assert.Equal(m.Codes, back.Codes);
            Assert.Equal(m.Zeros, back.Zeros);
            Assert.Equal(m.Scales, back.Scales);
            Assert.Equal(m.GroupIndex, back.GroupIndex);
            Assert.Equal(m.Dequantize(), back.Dequantize());
        }
    }

    /// <summary>AutoGPTQ's QuantLinear.pack loop for one packed column, re-derived independently as a test oracle.</summary>
    static uint[] AutoGptqStylePack(int[] values, int bits)
    {
        var packed = new uint[values.Length * bits / 32];
        int i = 0, row = 0;
        while (row < packed.Length)
        {
            if (bits != 3)
            {
                for (int j = i; j < i + 32 / bits; j++) packed[row] |= (uint)values[j] << (bits * (j - i));
                i += 32 / bits;
                row++;
                continue;
            }
            for (int j = i; j < i + 10; j++) packed[row] |= (uint)values[j] << (3 * (j - i));
            i += 10;
            packed[row] |= (uint)values[i] << 30;
            row++;
            packed[row] |= ((uint)values[i] >> 2) & 1;
            i++;
            for (int j = i; j < i + 10; j++) packed[row] |= (uint)values[j] << (3 * (j - i) + 1);
            i += 10;
            packed[row] |= (uint)values[i] << 31;
            row++;
            packed[row] |= ((uint)values[i] >> 1) & 3;
            i++;
            for (int j = i; j < i + 10; j++) packed[row] |= (uint)values[j] << (3 * (j - i) + 2);
            i += 10;
            row++;
        }
        return packed;
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(8)]
    public void LayoutMatchesAutoGptq(int bits)
    {
        const int rows = 32, columns = 128;
        var m = RandomMatrix(bits, rows, columns, groupSize: 32, shuffledGroups: false, seed: 10 + bits);
        var packed = GptqPacking.Pack(m);
        int words = columns * bits / 32;
        for (int o = 0; o < rows; o++)
        {
            var column = Enumerable.Range(0, columns).Select(i => (int)m.Codes[o * columns + i]).ToArray();
            var expected = AutoGptqStylePack(column, bits);
            for (int w = 0; w < words; w++) Assert.Equal(expected[w], (uint)packed.QWeight[w * rows + o]);
        }
        int zeroWords = rows * bits / 32;
        for (int g = 0; g < m.GroupCount; g++)
        {
            var zerosMinusOne = Enumerable.Range(0, rows).Select(o => (m.Zeros[g * rows + o] - 1) & m.Scheme.MaxCode).ToArray();
            var expected = AutoGptqStylePack(zerosMinusOne, bits);
            for (int w = 0; w < zeroWords; w++) Assert.Equal(expected[w], (uint)packed.QZeros[g * zeroWords + w]);
        }
    }

    [Fact]
    public void FourBitWordHoldsEightCodesLowNibbleFirst()
    {
        var m = QuantizedMatrix.Create(8, 32, QuantScheme.Grouped(4, 32, symmetric: true));
        for (int i = 0; i < 32; i++) m.Codes[i] = (byte)(i % 16); // row 0: 0, 1, ..., 15, 0, ...
        for (int o = 0; o < 8; o++) m.Zeros[o] = 8;
        var packed = GptqPacking.Pack(m);
        Assert.Equal(0x76543210, packed.QWeight[0 * 8 + 0]);
        Assert.Equal(unchecked((int)0xFEDCBA98), packed.QWeight[1 * 8 + 0]);
        Assert.Equal(0x77777777, packed.QZeros[0]); // eight zero points of 8, stored as 7
    }

    /// <summary>Unpack spreads 8 values into 8 bytes with pdep where the CPU has BMI2; this is the path of those that do not.</summary>
    [Fact]
    public void SpreadReferencePutsValueKInByteK()
    {
        Assert.Equal(0x0706050403020100UL, GptqPacking.SpreadReference(0x76543210, 4));
        Assert.Equal(0x0F0E0D0C0B0A0908UL, GptqPacking.SpreadReference(0xFEDCBA98, 4));
        Assert.Equal(0x0302010003020100UL, GptqPacking.SpreadReference(0b11_10_01_00_11_10_01_00, 2));
    }

    [Fact]
    public void ShapesThatDoNotFillWordsAreRefused()
    {
        var m = QuantizedMatrix.Create(8, 64, QuantScheme.Grouped(3, 32, symmetric: true)); // out·3 = 24 bits
        Assert.Throws<ShrinkException>(() => GptqPacking.Pack(m));
        var ok = GptqPacking.Pack(QuantizedMatrix.Create(32, 64, QuantScheme.Grouped(4, 32, symmetric: true)));
        var bad = ok with { GIdx = Enumerable.Repeat(5, 64).ToArray() };
        Assert.Throws<ShrinkException>(() => GptqPacking.Unpack(bad, QuantScheme.Grouped(4, 32, symmetric: true)));
    }
}
