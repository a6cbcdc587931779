using System.Buffers.Binary;
using System.Text.RegularExpressions;
using LlmShrink.Compression.Recipes;
using LlmShrink.Model;
using LlmShrink.Planning;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>pareto.png: drawn here (SkiaSharp's native library loads on this machine), at its size, with something on it.</summary>
public class ParetoChartTests
{
    private static readonly byte[] PngSignature = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];

    /// <summary>
    /// Two blocks of four fused groups on the default menu, priced like the folder layout (bits plus a 16-bit scale, and a
    /// 16-bit zero when asymmetric, per group of weights; "keep" at 32 bits), with the error falling 4× per bit, GPTQ
    /// halving RTN's, each group's first four schemes measured end to end, and a token taking 0.4 ns per float weight
    /// and proportionally less per quantized one — a table shaped like a real one.
    /// </summary>
    private static (AutoRequest, AutoSummary, MultipleChoiceKnapsack) Example()
    {
        var candidates = CandidateMenu.Default;
        var groups = Enumerable.Range(0, 2).SelectMany(layer => new[] { "qkv_proj", "o_proj", "gate_up_proj", "down_proj" }
            .Select(name => new LayerGroup(layer, name, [LinearRole.Q]))).ToList();
        long[] weights = [.. groups.Select(g => g.Name switch { "qkv_proj" => 3L << 16, "gate_up_proj" => 6L << 16, "down_proj" => 3L << 16, _ => 1L << 16 })];
        var entries = groups.Select((_, g) => candidates.Select((c, i) =>
        {
            if (c.IsKeep) return new CandidateMeasurement(weights[g] * 4, 0, 0, weights[g] * 4e-10);
            var p = Regex.Match(c.Name, @"(\w+) bits=(\d+) group_size=(\d+) symmetric=(\w+)").Groups;
            int bits = int.Parse(p[2].Value), groupSize = int.Parse(p[3].Value);
            bool symmetric = p[4].Value == "true";
            double bitsPerWeight = bits + (symmetric ? 16.0 : 32.0) / groupSize;
            double proxy = Math.Pow(4, -bits) * (p[1].Value == "gptq" ? 0.5 : 1) * (1 + groupSize / 256.0) * (symmetric ? 1.3 : 1);
            double sensitivity = 0.05 * (1 + g % 4);
            return new CandidateMeasurement((long)(weights[g] * bitsPerWeight / 8), proxy, i <= 4 ? sensitivity * proxy * 1.1 : null, weights[g] * bitsPerWeight * 0.5e-10);
        }).ToArray()).ToArray();
        var table = new MeasurementTable("key", [.. groups.Select(g => g.Label)], [.. candidates.Select(c => c.Name)], entries, weights.Sum(), 12.5,
            new DecodeTiming(FloatTokensPerSecond: 150, [.. weights.Select(w => w * 4e-10)]), MeasurementTable.CurrentVersion);

        var knapsack = new MultipleChoiceKnapsack([.. Enumerable.Range(0, groups.Count)
            .Select(g => (IReadOnlyList<Option>)[.. entries[g].Zip(table.PredictedKl(g), (m, loss) => new Option(m.Bytes, loss))])]);
        var request = new AutoRequest("model", "calib.txt", "out") { TargetBitsPerWeight = 3.5 };
        PlanAttempt Attempt(Selection plan, long written, double klFactor) =>
            new(plan, plan.Cost, PredictedTokensPerSecond: 100, written, plan.Loss * klFactor, MeasuredTokensPerSecond: 90, MeetsBudget: true, Embedding: null);
        var first = Attempt(knapsack.WithinCost((long)(3.5 * table.Parameters / 8))!, 1_000_000, 1.4);
        var second = Attempt(knapsack.WithinCost(first.Selection.Cost - table.Parameters / 40)!, 990_000, 1.3);
        var summary = new AutoSummary(table, groups, candidates, Recipe.From("p", [new ModifierSpec("rtn")]), [first, second], second,
            FromCache: false, HeldBackTokens: 2048, Elapsed: TimeSpan.FromSeconds(20), Embeddings: null);
        return (request, summary, knapsack);
    }

    [Fact]
    public void WritesAPngOfTheRequestedSizeWithTheChartOnIt()
    {
        using var dir = new TempDir();
        var (request, summary, knapsack) = Example();
        string chart = dir.File("pareto.png"), blank = dir.File("blank.png");
        ParetoChart.Write(chart, request, summary, knapsack);
        new ScottPlot.Plot().SavePng(blank, ParetoChart.Width, ParetoChart.Height);

        var png = File.ReadAllBytes(chart);
        Assert.Equal(PngSignature, png[..8]);
        Assert.Equal("IHDR", System.Text.Encoding.ASCII.GetString(png, 12, 4));
        Assert.Equal(ParetoChart.Width, BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(16)));
        Assert.Equal(ParetoChart.Height, BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(20)));
        // The front, three dozen markers and their names, the legend and the notes compress far worse than empty axes.
        long empty = new FileInfo(blank).Length;
        Assert.True(png.Length > 2 * empty, $"chart {png.Length} bytes, an empty plot {empty}");
    }

    [Fact]
    public void PlanMdShowsTheChartUnderTheParetoHeading()
    {
        var (request, summary, knapsack) = Example();
        var report = PlanReport.Write(request, summary, knapsack);
        Assert.Contains("## Pareto front (predicted) and uniform candidates\n\n![Pareto front](pareto.png)\n", report.ReplaceLineEndings("\n"));
    }

    [Theory]
    [InlineData("gptq bits=4 group_size=128 symmetric=false", "gptq b4 g128 asym")]
    [InlineData("rtn bits=8 group_size=32 symmetric=true", "rtn b8 g32 sym")]
    [InlineData("ggml type=Q4_K", "ggml Q4_K")]
    [InlineData("ggml rounding=gptq type=Q3_K", "ggml gptq Q3_K")]
    [InlineData("sparsegpt pattern=2:4 → gptq bits=4", "sparsegpt 2:4 → gptq b4")]
    [InlineData("keep", "keep")]
    public void CandidateNamesAreShortenedForLabels(string name, string label) => Assert.Equal(label, ParetoChart.ShortName(name));
}
