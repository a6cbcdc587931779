using LlmShrink.Model;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>StructuredSlicing on matrices small enough to write out: which rows and columns go.</summary>
public class BlockShapeSlicingTests
{
    /// <summary>A row-major [rows, columns] matrix whose entry (r, c) is 100·r + c, so every value says where it came from.</summary>
    private static float[] Matrix(int rows, int columns) =>
        [.. Enumerable.Range(0, rows * columns).Select(i => 100f * (i / columns) + i % columns)];

    [Fact]
    public void Removing_a_kv_group_takes_its_query_heads_rows_biases_and_o_proj_columns()
    {
        // 4 query heads of size 2 in 2 groups (heads 0–1 read KV head 0, heads 2–3 KV head 1); hidden 3.
        var weights = new StructuredSlicing.AttentionWeights(Matrix(8, 3), Matrix(4, 3), Matrix(4, 3), Matrix(3, 8),
            QBias: [.. Enumerable.Range(0, 8).Select(i => (float)i)], KBias: [0, 1, 2, 3], VBias: [10, 11, 12, 13]);
        var (sliced, shape) = StructuredSlicing.RemoveKvGroups(weights, new LayerShape(4, 2, 5), headDim: 2, kvHeads: [0]);

        Assert.Equal(new LayerShape(2, 1, 5), shape);
        Assert.Equal(Rows(Matrix(8, 3), 3, 4, 5, 6, 7), sliced.Q);     // query heads 2 and 3
        Assert.Equal(Rows(Matrix(4, 3), 3, 2, 3), sliced.K);           // KV head 1
        Assert.Equal(Rows(Matrix(4, 3), 3, 2, 3), sliced.V);
        Assert.Equal([4, 5, 6, 7, 104, 105, 106, 107, 204, 205, 206, 207], sliced.O);
        Assert.Equal([4f, 5, 6, 7], sliced.QBias!);
        Assert.Equal([2f, 3], sliced.KBias!);
        Assert.Equal([12f, 13], sliced.VBias!);
    }

    [Fact]
    public void Removing_mlp_channels_takes_gate_and_up_rows_and_down_columns()
    {
        var weights = new StructuredSlicing.MlpWeights(Matrix(5, 2), Matrix(5, 2), Matrix(2, 5));
        var (sliced, shape) = StructuredSlicing.RemoveChannels(weights, new LayerShape(4, 2, 5), channels: [3, 0]);
        Assert.Equal(new LayerShape(4, 2, 3), shape);
        Assert.Equal(Rows(Matrix(5, 2), 2, 1, 2, 4), sliced.Gate);
        Assert.Equal(Rows(Matrix(5, 2), 2, 1, 2, 4), sliced.Up);
        Assert.Equal([1, 2, 4, 101, 102, 104], sliced.Down);
    }

    [Fact]
    public void Impossible_cuts_are_refused()
    {
        var attention = new StructuredSlicing.AttentionWeights(Matrix(8, 3), Matrix(4, 3), Matrix(4, 3), Matrix(3, 8));
        var shape = new LayerShape(4, 2, 5);
        Assert.Throws<ArgumentException>(() => StructuredSlicing.RemoveKvGroups(attention, shape, 2, [0, 1]));
        Assert.Throws<ArgumentOutOfRangeException>(() => StructuredSlicing.RemoveKvGroups(attention, shape, 2, [2]));
        Assert.Throws<ArgumentException>(() => StructuredSlicing.RemoveKvGroups(attention, shape, 2, [1, 1]));
        Assert.Throws<ArgumentException>(() => StructuredSlicing.RemoveKvGroups(attention with { K = Matrix(2, 3) }, shape, 2, [1]));
        var mlp = new StructuredSlicing.MlpWeights(Matrix(5, 2), Matrix(5, 2), Matrix(2, 5));
        Assert.Throws<ArgumentException>(() => StructuredSlicing.RemoveChannels(mlp, shape, [0, 1, 2, 3, 4]));
        Assert.Throws<ArgumentException>(() => StructuredSlicing.RemoveChannels(mlp with { Down = Matrix(2, 4) }, shape, [0]));
    }

    private static float[] Rows(float[] matrix, int columns, params int[] rows) => StructuredSlicing.KeepRows(matrix, columns, rows);
}
