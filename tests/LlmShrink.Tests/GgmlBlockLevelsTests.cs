using LlmShrink.Formats;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>
/// <see cref="GgmlBlockLevels"/> against the project's decoders: the sub-block grids and level positions it reads and writes
/// are the ones <see cref="GgmlBlocks"/> decodes, for every type ggml encodes here.
/// </summary>
public class GgmlBlockLevelsTests
{
    public static TheoryData<TensorType> Types => new(Enum.GetValues<TensorType>().Where(GgmlBlockLevels.Supports));

    /// <summary>One block of <paramref name="type"/> from the importance-weighted encoder, on Gaussian weights with an outlier.</summary>
    private static byte[] EncodedBlock(TensorType type, int seed)
    {
        int elements = TensorTypes.BlockElements(type);
        var x = QuantizationTestData.Gaussian(new Random(seed), elements, 0.02f);
        x[7] = 0.2f;
        var importance = QuantizationTestData.Gaussian(new Random(seed + 1), elements).Select(v => v * v).ToArray();
        var block = new byte[TensorTypes.BlockBytes(type)];
        GgmlQuantizers.Quantize(type, x, block, importance);
        return block;
    }

    private static float[] Decode(TensorType type, byte[] block)
    {
        var y = new float[TensorTypes.BlockElements(type)];
        GgmlBlocks.Dequantize(type, block, y);
        return y;
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void Each_element_decodes_to_its_sub_block_grid_value_of_its_stored_level_bit_for_bit(TensorType type)
    {
        for (int seed = 0; seed < 4; seed++)
        {
            var block = EncodedBlock(type, 10 * seed);
            var decoded = Decode(type, block);
            int sub = GgmlBlockLevels.SubBlockElements(type);
            for (int e = 0; e < decoded.Length; e++)
            {
                var grid = GgmlBlockLevels.Grid(type, block, e / sub);
                int level = GgmlBlockLevels.Level(type, block, e);
                Assert.InRange(level, 0, grid.MaxLevel);
                Assert.Equal(BitConverter.SingleToInt32Bits(decoded[e]), BitConverter.SingleToInt32Bits(grid.Value(level)));
            }
        }
    }

    /// <summary>Writing a level changes that element alone, to exactly the grid's value, and reads back; every level of the range is tried.</summary>
    [Theory]
    [MemberData(nameof(Types))]
    public void Setting_a_level_changes_only_that_element_to_the_grid_value(TensorType type)
    {
        var block = EncodedBlock(type, 3);
        int sub = GgmlBlockLevels.SubBlockElements(type);
        var random = new Random(5);
        for (int trial = 0; trial < 64; trial++)
        {
            int e = trial < 2 ? trial * (TensorTypes.BlockElements(type) - 1) : random.Next(TensorTypes.BlockElements(type));
            var grid = GgmlBlockLevels.Grid(type, block, e / sub);
            for (int level = 0; level <= grid.MaxLevel; level += 1 + grid.MaxLevel / 8)
            {
                var before = Decode(type, block);
                GgmlBlockLevels.SetLevel(type, block, e, level);
                Assert.Equal(level, GgmlBlockLevels.Level(type, block, e));
                var after = Decode(type, block);
                for (int j = 0; j < after.Length; j++)
                    Assert.Equal(BitConverter.SingleToInt32Bits(j == e ? grid.Value(level) : before[j]), BitConverter.SingleToInt32Bits(after[j]));
            }
            GgmlBlockLevels.SetLevel(type, block, e, grid.MaxLevel);
            Assert.Equal(grid.MaxLevel, GgmlBlockLevels.Level(type, block, e));
        }
    }

    [Fact]
    public void Nearest_takes_the_closest_decoded_value_and_clamps_to_the_range()
    {
        var grid = new GgmlLevelGrid(Scale: 0.1f, Zero: 0, Offset: 0.35f, MaxLevel: 15); // values −0.35, −0.25, …, 1.15
        Assert.Equal(0, grid.Nearest(-10f));
        Assert.Equal(15, grid.Nearest(10f));
        Assert.Equal(4, grid.Nearest(0.04f));  // 0.05 is nearest
        Assert.Equal(3, grid.Nearest(-0.06f)); // −0.05
        var negative = new GgmlLevelGrid(Scale: -0.5f, Zero: 4, Offset: 0f, MaxLevel: 7); // Q3_K with a negative group scale
        Assert.Equal(0, negative.Nearest(3f));  // −0.5·(0 − 4) = 2, the largest value
        Assert.Equal(7, negative.Nearest(-3f)); // −1.5
        Assert.Equal(4, new GgmlLevelGrid(0f, 4, 0f, 7).Nearest(1f)); // a zero step holds one value
        // On every grid the level found is at least as close as every other level.
        var random = new Random(1);
        for (int t = 0; t < 2000; t++)
        {
            var g = new GgmlLevelGrid((float)(random.NextDouble() - 0.5) * 0.01f, random.Next(0, 33), (float)(random.NextDouble() - 0.5) * 0.02f, 31);
            float w = (float)(random.NextDouble() - 0.5) * 0.5f;
            float best = MathF.Abs(w - g.Value(g.Nearest(w)));
            for (int level = 0; level <= 31; level++) Assert.True(best <= MathF.Abs(w - g.Value(level)), $"{g}: {w} → {g.Nearest(w)}, but level {level} is closer");
        }
    }
}
