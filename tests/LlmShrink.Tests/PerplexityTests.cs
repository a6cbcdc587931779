using LlmShrink.Evaluation;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>A fake model whose logits are a function of (position, fed token); it records what it was asked.</summary>
internal sealed class FakeLogitModel(int vocab, Func<int, int, float[]> row) : ILogitModel
{
    public int VocabSize => vocab;
    public int Position { get; private set; }
    public List<int> Fed { get; } = new();
    public List<int> PositionsWithLogits { get; } = new();
    public int Resets { get; private set; }

    public void Reset() { Position = 0; Resets++; }

    public void Feed(ReadOnlySpan<int> tokens, Span<float> logits)
    {
        for (int i = 0; i < tokens.Length; i++, Position++)
        {
            Fed.Add(tokens[i]);
            if (logits.IsEmpty) continue;
            PositionsWithLogits.Add(Position);
            row(Position, tokens[i]).CopyTo(logits.Slice(i * vocab, vocab));
        }
    }

    public static float[] LogProbs(params double[] p) => p.Select(x => (float)Math.Log(x)).ToArray();
}

public class PerplexityTests
{
    private static int[] Cycle(int count, int vocab) => Enumerable.Range(0, count).Select(i => i % vocab).ToArray();

    [Theory]
    [InlineData(PerplexityProtocol.Standard)]
    [InlineData(PerplexityProtocol.LlamaCpp)]
    public void UniformLogitsGiveThePerplexityOfTheVocabularySize(PerplexityProtocol protocol)
    {
        const int vocab = 37;
        var model = new FakeLogitModel(vocab, (_, _) => new float[vocab]);
        var result = Perplexity.Evaluate(Cycle(500, vocab), 32, protocol, replaceFirstWithBos: null, model);
        Assert.Equal(vocab, result.Perplexity, 1e-9);
    }

    [Fact]
    public void StandardProtocolScoresEveryNextTokenInEachWindow()
    {
        // p = (0.1, 0.2, 0.3, 0.4) at every position; tokens 0 1 2 3 0 1 2 3 0 1 → two windows of 4, remainder dropped.
        var model = new FakeLogitModel(4, (_, _) => FakeLogitModel.LogProbs(0.1, 0.2, 0.3, 0.4));
        var result = Perplexity.Evaluate(Cycle(10, 4), 4, PerplexityProtocol.Standard, null, model);
        Assert.Equal(2, result.Windows);
        Assert.Equal(6, result.ScoredPositions);
        // Each window predicts 1, 2, 3: NLL = −ln(0.2·0.3·0.4) per 3 predictions.
        Assert.Equal(-Math.Log(0.2 * 0.3 * 0.4) / 3, result.MeanNll, 1e-6);
        Assert.Equal(Math.Pow(0.024, -1.0 / 3), result.Perplexity, 1e-5);
        Assert.Equal(2, model.Resets);
        Assert.Equal(new[] { 0, 1, 2, 0, 1, 2 }, model.PositionsWithLogits);
    }

    [Fact]
    public void LlamaCppProtocolReplacesTheFirstTokenWithBosAndScoresTheSecondHalf()
    {
        const int bos = 3;
        var model = new FakeLogitModel(4, (_, _) => FakeLogitModel.LogProbs(0.1, 0.2, 0.3, 0.4));
        var tokens = Cycle(17, 4); // 0 1 2 3 0 1 2 3 ... → 2 chunks of 8
        var result = Perplexity.Evaluate(tokens, 8, PerplexityProtocol.LlamaCpp, bos, model);
        Assert.Equal(2, result.Windows);
        // first = 4: logits at 4, 5, 6 scored against tokens at 5, 6, 7 = 1, 2, 3.
        Assert.Equal(6, result.ScoredPositions);
        Assert.Equal(-Math.Log(0.2 * 0.3 * 0.4) / 3, result.MeanNll, 1e-6);
        Assert.Equal(new[] { 4, 5, 6, 4, 5, 6 }, model.PositionsWithLogits);
        // Each chunk starts with BOS instead of its own first token, and its last token is never run.
        Assert.Equal(new[] { bos, 1, 2, 3, 0, 1, 2, bos, 1, 2, 3, 0, 1, 2 }, model.Fed);
    }

    [Fact]
    public void ScoredPredictionsDependOnTheTokenAfterEachScoredPosition()
    {
        // The model predicts token 0 with p = 0.5 only at position 5; elsewhere uniform over 4 tokens.
        var model = new FakeLogitModel(4, (pos, _) => pos == 5 ? FakeLogitModel.LogProbs(0.5, 0.5 / 3, 0.5 / 3, 0.5 / 3) : new float[4]);
        var tokens = new[] { 1, 1, 1, 1, 1, 1, 0, 1 };
        var result = Perplexity.Evaluate(tokens, 8, PerplexityProtocol.LlamaCpp, null, model);
        // Scored: positions 4, 5, 6 → −ln 0.25, −ln 0.5 (token 0 at position 6), −ln 0.25.
        Assert.Equal((2 * Math.Log(4) + Math.Log(2)) / 3, result.MeanNll, 1e-6);
    }

    [Theory]
    [InlineData(1000, 64, PerplexityProtocol.Standard, int.MaxValue, 15, 15 * 63)]
    [InlineData(1000, 64, PerplexityProtocol.LlamaCpp, int.MaxValue, 15, 15 * 31)]
    [InlineData(1000, 65, PerplexityProtocol.LlamaCpp, int.MaxValue, 15, 15 * 32)]
    [InlineData(1000, 64, PerplexityProtocol.LlamaCpp, 3, 3, 3 * 31)]
    [InlineData(1024, 256, PerplexityProtocol.Standard, int.MaxValue, 4, 4 * 255)]
    [InlineData(255, 256, PerplexityProtocol.Standard, int.MaxValue, 0, 0)]
    public void WindowAndScoredCounts(int tokens, int context, PerplexityProtocol protocol, int maxWindows, int windows, int scored)
    {
        var plan = Perplexity.Windows(tokens, context, protocol, maxWindows);
        Assert.Equal(windows, plan.Length);
        Assert.Equal(scored, plan.Sum(w => w.ScoredCount));
        for (int i = 0; i < plan.Length; i++)
        {
            Assert.Equal(i * context, plan[i].Start);
            Assert.Equal(context, plan[i].Length);
        }
        if (windows == 0) return;
        var model = new FakeLogitModel(8, (_, _) => new float[8]);
        var result = Perplexity.Evaluate(Cycle(tokens, 8), context, protocol, null, model, maxWindows: maxWindows);
        Assert.Equal(scored, result.ScoredPositions);
    }

    [Fact]
    public void TooFewTokensForOneWindowIsRejected()
    {
        var model = new FakeLogitModel(4, (_, _) => new float[4]);
        Assert.Throws<ArgumentException>(() => Perplexity.Evaluate(Cycle(7, 4), 8, PerplexityProtocol.Standard, null, model));
    }

    [Fact]
    public void CancellationStopsTheLoop()
    {
        var model = new FakeLogitModel(4, (_, _) => new float[4]);
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.Throws<OperationCanceledException>(() =>
            Perplexity.Evaluate(Cycle(64, 4), 8, PerplexityProtocol.Standard, null, model, cancellation: cts.Token));
    }
}
