using LlmShrink.Compression.Pruning;
using Xunit;

namespace LlmShrink.Tests;

public class PruningTests
{
    const int Rows = 128, Columns = 256, Tokens = 512;
    static readonly float[] W = QuantizationTestData.Weights(Rows, Columns, seed: 21);
    static readonly float[] X = QuantizationTestData.Activations(Tokens, Columns, seed: 22);

    /// <summary>‖X_j‖₂ over the tokens, Wanda's input norms.</summary>
    internal static float[] ColumnNorms(float[] x, int tokens, int columns)
    {
        var norms = new float[columns];
        for (int c = 0; c < columns; c++)
        {
            double sum = 0;
            for (int t = 0; t < tokens; t++) sum += (double)x[t * columns + c] * x[t * columns + c];
            norms[c] = (float)Math.Sqrt(sum);
        }
        return norms;
    }

    static readonly float[] Norms = ColumnNorms(X, Tokens, Columns);

    /// <summary>Prunes a copy of <paramref name="w"/> with the named method; returns the mask and the pruned copy.</summary>
    static (bool[] Keep, float[] Pruned) Prune(string method, float[] w, int rows, int columns, SparsityPattern pattern, double? sparsity)
    {
        var pruned = (float[])w.Clone();
        var keep = method == "magnitude"
            ? MagnitudePruning.Prune(pruned, rows, columns, pattern, sparsity)
            : Wanda.Prune(pruned, rows, columns, ColumnNorms(QuantizationTestData.Activations(64, columns, seed: 23), 64, columns), pattern, sparsity);
        return (keep, pruned);
    }

    [Theory]
    [InlineData("unstructured", null)]
    [InlineData("2:4", 0.5)]
    [InlineData("4:8", 0.5)]
    [InlineData("1:4", 0.75)]
    [InlineData("31:32", 1 / 32.0)]
    public void PatternParsesAndPrintsBack(string text, double? implied)
    {
        var pattern = SparsityPattern.Parse(text);
        Assert.Equal(text, pattern.ToString());
        Assert.Equal(implied, pattern.ImpliedSparsity);
        Assert.Equal(pattern, SparsityPattern.Parse(pattern.ToString()));
    }

    [Theory]
    [InlineData("4:4")]
    [InlineData("5:4")]
    [InlineData("0:4")]
    [InlineData("2:64")]
    [InlineData("2:33")]
    [InlineData("-2:4")]
    [InlineData(" 2:4")]
    [InlineData("2-4")]
    [InlineData("2:4:8")]
    [InlineData("Unstructured")]
    [InlineData("")]
    public void PatternRejectsBadText(string text) => Assert.Throws<ShrinkException>(() => SparsityPattern.Parse(text));

    [Fact]
    public void SparsityMustFitThePattern()
    {
        var w = new float[4 * 6];
        Assert.Throws<ShrinkException>(() => MagnitudePruning.Prune(w, 4, 6, SparsityPattern.Parse("2:4")));      // 6 inputs, groups of 4
        Assert.Throws<ShrinkException>(() => MagnitudePruning.Prune(w, 4, 6, SparsityPattern.Parse("1:3"), 0.5)); // 1:3 prunes 2/3
        Assert.Throws<ShrinkException>(() => MagnitudePruning.Prune(w, 4, 6, SparsityPattern.Unstructured));      // no sparsity
        Assert.Throws<ShrinkException>(() => MagnitudePruning.Prune(w, 4, 6, SparsityPattern.Unstructured, 1.0));
        Assert.Equal(8, MagnitudePruning.Prune(w, 4, 6, SparsityPattern.Parse("1:3"), 2 / 3.0).Count(k => k));
    }

    [Theory]
    [InlineData("magnitude", 0.5, 256)]
    [InlineData("wanda", 0.5, 256)]
    [InlineData("magnitude", 0.3, 250)] // 75 per row
    [InlineData("wanda", 0.7, 250)]     // 175
    [InlineData("magnitude", 0.45, 250)] // 112.5 rounds half to even: 112
    [InlineData("wanda", 0.45, 250)]
    public void UnstructuredPrunesTheRoundedShareOfEveryRow(string method, double sparsity, int columns)
    {
        const int rows = 40;
        var w = QuantizationTestData.Weights(rows, columns, seed: 24);
        // Ties and zeros: every row has 60 equal weights and two zero inputs, so the count cannot come from distinct scores.
        for (int r = 0; r < rows; r++)
        {
            for (int c = 100; c < 160; c++) w[r * columns + c] = 0.01f;
            w[r * columns + 7] = w[r * columns + 8] = 0;
        }
        var (keep, pruned) = Prune(method, w, rows, columns, SparsityPattern.Unstructured, sparsity);
        int expected = (int)Math.Round(sparsity * columns, MidpointRounding.ToEven);
        for (int r = 0; r < rows; r++)
        {
            Assert.Equal(expected, Enumerable.Range(0, columns).Count(c => !keep[r * columns + c]));
            for (int c = 0; c < columns; c++)
                Assert.Equal(keep[r * columns + c] ? w[r * columns + c] : 0f, pruned[r * columns + c]);
        }
    }

    [Theory]
    [InlineData("magnitude", "2:4")]
    [InlineData("magnitude", "4:8")]
    [InlineData("wanda", "2:4")]
    [InlineData("wanda", "4:8")]
    public void NOfMKeepsExactlyNOfEveryM(string method, string text)
    {
        var pattern = SparsityPattern.Parse(text);
        var (keep, pruned) = Prune(method, W, Rows, Columns, pattern, null);
        for (int r = 0; r < Rows; r++)
            for (int g = 0; g < Columns; g += pattern.M)
            {
                var group = Enumerable.Range(r * Columns + g, pattern.M).ToArray();
                Assert.Equal(pattern.N, group.Count(i => keep[i]));
                Assert.Equal(pattern.N, group.Count(i => pruned[i] != 0));
            }
    }

    [Theory]
    [InlineData("unstructured")]
    [InlineData("2:4")]
    public void EachMethodKeepsItsHighestScores(string text)
    {
        var pattern = SparsityPattern.Parse(text);
        int width = pattern.IsNOfM ? pattern.M : Columns;
        foreach (bool wanda in new[] { false, true })
        {
            var pruned = (float[])W.Clone();
            var keep = wanda
                ? Wanda.Prune(pruned, Rows, Columns, Norms, pattern, 0.5)
                : MagnitudePruning.Prune(pruned, Rows, Columns, pattern, 0.5);
            for (int r = 0; r < Rows; r++)
                for (int g = 0; g < Columns; g += width)
                {
                    var scores = Enumerable.Range(g, width).Select(c => (c, s: Math.Abs(W[r * Columns + c]) * (wanda ? Norms[c] : 1f))).ToArray();
                    float lowestKept = scores.Where(x => keep[r * Columns + x.c]).Min(x => x.s);
                    float highestPruned = scores.Where(x => !keep[r * Columns + x.c]).Max(x => x.s);
                    Assert.True(lowestKept >= highestPruned, $"row {r}, group {g}: kept {lowestKept} < pruned {highestPruned}");
                }
        }
    }

    [Fact]
    public void WandaWithEqualNormsIsMagnitude()
    {
        var equal = Enumerable.Repeat(3.7f, Columns).ToArray();
        var a = (float[])W.Clone();
        var b = (float[])W.Clone();
        Assert.Equal(MagnitudePruning.Prune(a, Rows, Columns, SparsityPattern.Unstructured, 0.6),
            Wanda.Prune(b, Rows, Columns, equal, SparsityPattern.Unstructured, 0.6));
        Assert.Equal(a, b);
    }

    [Fact]
    public void WandaKeepsASmallWeightOnALargeInput()
    {
        // Scores |w|·‖x‖: 0.1·10 = 1.0, 0.2, 0.3, 0.4 — magnitude keeps 0.3 and 0.4, Wanda 0.1 and 0.4.
        float[] w = [0.1f, -0.2f, 0.3f, -0.4f], norms = [10, 1, 1, 1];
        var byMagnitude = (float[])w.Clone();
        var byWanda = (float[])w.Clone();
        Assert.Equal([false, false, true, true], MagnitudePruning.Prune(byMagnitude, 1, 4, SparsityPattern.Parse("2:4")));
        Assert.Equal([true, false, false, true], Wanda.Prune(byWanda, 1, 4, norms, SparsityPattern.Parse("2:4")));
        Assert.Equal([0.1f, 0f, 0f, -0.4f], byWanda);
    }

    [Fact]
    public void OutlierRatioCountsScoresAboveMTimesTheMean()
    {
        // Scores |w|·‖x‖ = [1, 2, 1, 10; 1, 1, 1, 10]: mean 28/8 = 3.5. Above 2 × 3.5 = 7: the two 10s (2/8); above 5 × 3.5: none.
        float[] w = [1, -2, 1, 1, -1, 1, 1, -1], norms = [1, 1, 1, 10];
        Assert.Equal(0.25, OutlierWeightedSparsity.OutlierRatio([(w, 2, 4, norms)], m: 2));
        Assert.Equal(0.0, OutlierWeightedSparsity.OutlierRatio([(w, 2, 4, norms)]));
        // Scores [1, 1, 1, 1; 1, 1, 1, 20]: mean 27/8 = 3.375, above 16.875: the 20 alone.
        float[] spike = [1, 1, 1, 1, 1, 1, 1, 20];
        Assert.Equal(0.125, OutlierWeightedSparsity.OutlierRatio([(spike, 2, 4, new float[] { 1, 1, 1, 1 })]));
    }

    [Fact]
    public void OutlierRatioPoolsABlocksLinearsUnderOneMean()
    {
        // Scores all 1 in one linear and all 10 in the other: neither has an outlier against its own mean, but against the
        // pooled mean 5.5 (threshold 1.5 × 5.5 = 8.25) the second linear's four scores all are: 4 of 8.
        float[] ones = [1, 1, 1, 1], tens = [10, -10, 10, -10];
        float[] scales = [1, 1];
        Assert.Equal(0.0, OutlierWeightedSparsity.OutlierRatio([(ones, 2, 2, scales)], m: 1.5));
        Assert.Equal(0.0, OutlierWeightedSparsity.OutlierRatio([(tens, 2, 2, scales)], m: 1.5));
        Assert.Equal(0.5, OutlierWeightedSparsity.OutlierRatio([(ones, 2, 2, scales), (tens, 2, 2, scales)], m: 1.5));
    }

    [Fact]
    public void AllocateKeepsTheMeanOrdersByOutliersAndStaysInTheBand()
    {
        double[] ratios = [0.01, 0.05, 0.02, 0.10, 0.03];
        var sparsities = OutlierWeightedSparsity.Allocate(ratios, 0.7, lambda: 0.08);
        Assert.Equal(0.7, sparsities.Average(), 12);
        Assert.All(sparsities, s => Assert.InRange(s, 0.62 - 1e-12, 0.78 + 1e-12));
        // Mean ratio 0.042; layer 3 is furthest from it (0.058) and sits on the lower bound, scale 0.08 / 0.058.
        Assert.Equal(0.62, sparsities[3], 12);
        Assert.Equal(0.7 + 0.08 / 0.058 * 0.032, sparsities[0], 12);
        // More outliers, less pruning: the sparsities sort in the reverse order of the ratios.
        var byRatio = Enumerable.Range(0, ratios.Length).OrderBy(l => ratios[l]).ToArray();
        for (int k = 1; k < byRatio.Length; k++) Assert.True(sparsities[byRatio[k]] < sparsities[byRatio[k - 1]]);
    }

    [Fact]
    public void AllocateMatchesThePapersMappingForEvenlySpreadRatios()
    {
        // Ratios normalized to [0, 2λ] = [0, 0.08, 0.16] and shifted to mean 1 − S as density: sparsities S + 0.08, S, S − 0.08.
        var sparsities = OutlierWeightedSparsity.Allocate([0.0, 0.5, 1.0], 0.5);
        Assert.Equal([0.58, 0.5, 0.42], sparsities.Select(s => Math.Round(s, 12)));
        Assert.Equal([0.6, 0.6, 0.6], OutlierWeightedSparsity.Allocate([0.03, 0.03, 0.03], 0.6));
        Assert.Throws<ShrinkException>(() => OutlierWeightedSparsity.Allocate([0.1, 0.2], 0.95, 0.08));
    }
}
