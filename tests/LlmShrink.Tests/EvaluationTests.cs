using LlmShrink.Evaluation;
using Xunit;

namespace LlmShrink.Tests;

public class EvaluationTests
{
    [Fact]
    public void KlOfIdenticalDistributionsIsZero()
    {
        float[] logits = [1.5f, -2f, 0.25f, 3f, 0f];
        Assert.Equal(0, KlDivergence.Compute(logits, logits), 1e-12);
        // Logits that differ by a constant are the same distribution.
        Assert.Equal(0, KlDivergence.Compute(logits, logits.Select(x => x + 7f).ToArray()), 1e-6);
    }

    [Fact]
    public void KlOfAKnownPair()
    {
        // P = (1/2, 1/2), Q = (1/4, 3/4): KL(P‖Q) = ½ ln 2 + ½ ln(2/3).
        var p = FakeLogitModel.LogProbs(0.5, 0.5);
        var q = FakeLogitModel.LogProbs(0.25, 0.75);
        Assert.Equal(0.5 * Math.Log(2) + 0.5 * Math.Log(2.0 / 3), KlDivergence.Compute(p, q), 1e-7);
        // And the other direction: ¼ ln(1/2) + ¾ ln(3/2).
        Assert.Equal(0.25 * Math.Log(0.5) + 0.75 * Math.Log(1.5), KlDivergence.Compute(q, p), 1e-7);
    }

    [Fact]
    public void ComparingAgainstAReferenceReportsKlTopOneAgreementAndBothPerplexities()
    {
        // Reference: (3/4, 1/4) at even positions, (1/4, 3/4) at odd ones; model: always (1/4, 3/4).
        // So they agree (KL 0, same argmax) at odd positions only.
        var reference = new FakeLogitModel(2, (pos, _) => pos % 2 == 0 ? FakeLogitModel.LogProbs(0.75, 0.25) : FakeLogitModel.LogProbs(0.25, 0.75));
        var model = new FakeLogitModel(2, (_, _) => FakeLogitModel.LogProbs(0.25, 0.75));
        var tokens = new[] { 0, 1, 1, 1, 1 }; // one standard window of 4: targets 1, 1, 1 at positions 0, 1, 2
        var result = Perplexity.Evaluate(tokens, 4, PerplexityProtocol.Standard, null, model, reference);
        Assert.Equal(3, result.ScoredPositions);
        Assert.Equal(-Math.Log(0.75), result.MeanNll, 1e-6);
        Assert.Equal(-(2 * Math.Log(0.25) + Math.Log(0.75)) / 3, result.ReferenceMeanNll!.Value, 1e-6);
        double klEven = 0.75 * Math.Log(0.75 / 0.25) + 0.25 * Math.Log(0.25 / 0.75);
        Assert.Equal(2 * klEven / 3, result.MeanKlDivergence!.Value, 1e-6);
        Assert.Equal(100.0 / 3, result.Top1AgreementPercent!.Value, 1e-9);
    }

    [Fact]
    public void MismatchedVocabulariesAreRejected()
    {
        var a = new FakeLogitModel(4, (_, _) => new float[4]);
        var b = new FakeLogitModel(5, (_, _) => new float[5]);
        Assert.Throws<ArgumentException>(() => Perplexity.Evaluate(new int[8], 4, PerplexityProtocol.Standard, null, a, b));
    }

    [Fact]
    public void GreedySamplingIsArgmax()
    {
        var sampler = new Sampler(0, 0.9f, seed: 1);
        Assert.Equal(3, sampler.Sample([0.1f, 2f, -1f, 5f, 4.99f]));
        Assert.Equal(0, sampler.Sample([7f, 7f, 1f])); // first of equal maxima
    }

    [Fact]
    public void TemperatureOneSamplesTheSoftmaxDistribution()
    {
        var counts = Histogram(new Sampler(1, 1, seed: 42), FakeLogitModel.LogProbs(0.1, 0.2, 0.3, 0.4), 40_000);
        double[] expected = [0.1, 0.2, 0.3, 0.4];
        for (int i = 0; i < 4; i++) Assert.Equal(expected[i], counts[i], 0.01);
    }

    [Fact]
    public void TemperatureSharpensTheDistribution()
    {
        // T = 1/2 squares the probabilities: (1, 4, 9, 16)/30.
        var counts = Histogram(new Sampler(0.5f, 1, seed: 7), FakeLogitModel.LogProbs(0.1, 0.2, 0.3, 0.4), 40_000);
        for (int i = 0; i < 4; i++) Assert.Equal((i + 1) * (i + 1) / 30.0, counts[i], 0.01);
    }

    [Fact]
    public void TopPKeepsOnlyTheNucleus()
    {
        // top-p 0.5: 0.4 alone is not enough, 0.4 + 0.3 is → sample from {3, 2} with 4/7, 3/7.
        var counts = Histogram(new Sampler(1, 0.5f, seed: 3), FakeLogitModel.LogProbs(0.1, 0.2, 0.3, 0.4), 40_000);
        Assert.Equal(0, counts[0]);
        Assert.Equal(0, counts[1]);
        Assert.Equal(3 / 7.0, counts[2], 0.01);
        Assert.Equal(4 / 7.0, counts[3], 0.01);
    }

    [Fact]
    public void SamplingIsReproducibleForASeed()
    {
        var logits = FakeLogitModel.LogProbs(0.1, 0.2, 0.3, 0.4);
        var a = new Sampler(0.8f, 0.9f, seed: 11);
        var b = new Sampler(0.8f, 0.9f, seed: 11);
        var c = new Sampler(0.8f, 0.9f, seed: 12);
        var sa = Enumerable.Range(0, 200).Select(_ => a.Sample(logits)).ToArray();
        Assert.Equal(sa, Enumerable.Range(0, 200).Select(_ => b.Sample(logits)).ToArray());
        Assert.NotEqual(sa, Enumerable.Range(0, 200).Select(_ => c.Sample(logits)).ToArray());
    }

    private static double[] Histogram(Sampler sampler, float[] logits, int draws)
    {
        var counts = new double[logits.Length];
        for (int i = 0; i < draws; i++) counts[sampler.Sample(logits)]++;
        return counts.Select(c => c / draws).ToArray();
    }
}

/// <summary>A byte-level tokenizer: token i is byte i, decoded as UTF-8 (incomplete sequences become U+FFFD).</summary>
internal sealed class ByteTokenizer : LlmShrink.Tokenization.ITextTokenizer
{
    public int VocabSize => 256;
    public int BosId => 0;
    public int EosId => 0;
    public bool AddBos => false;
    public int[] Encode(string text, bool addBos) => System.Text.Encoding.UTF8.GetBytes(text).Select(b => (int)b).ToArray();
    public int[] EncodeContinuation(string text) => Encode(text, addBos: false);
    public string Decode(ReadOnlySpan<int> ids)
    {
        var bytes = new byte[ids.Length];
        for (int i = 0; i < ids.Length; i++) bytes[i] = (byte)ids[i];
        return System.Text.Encoding.UTF8.GetString(bytes);
    }
}

public class StreamingDecoderTests
{
    [Fact]
    public void MultiByteCharactersSplitOverTokensArePrintedOnceWhole()
    {
        var tokenizer = new ByteTokenizer();
        const string prompt = "Prix: ", continuation = "12 € — déjà 😀!";
        var decoder = new StreamingDecoder(tokenizer, tokenizer.Encode(prompt, false));
        var pieces = tokenizer.Encode(continuation, false).Select(decoder.Append).ToList();
        pieces.Add(decoder.Finish());
        Assert.Equal(continuation, string.Concat(pieces));
        Assert.DoesNotContain(pieces, p => p.Contains('\uFFFD'));
        // The euro sign is 3 bytes: nothing is printed until its last byte arrives.
        int euro = System.Text.Encoding.UTF8.GetByteCount("12 ");
        Assert.Equal(new[] { "", "", "€" }, pieces.Skip(euro).Take(3));
    }

    [Fact]
    public void AnUndecodableTailIsPrintedAtTheEnd()
    {
        var decoder = new StreamingDecoder(new ByteTokenizer(), [(int)'a']);
        Assert.Equal("b", decoder.Append('b'));
        Assert.Equal("", decoder.Append(0xE2)); // first byte of a 3-byte character that never completes
        Assert.Equal("\uFFFD", decoder.Finish());
    }
}
