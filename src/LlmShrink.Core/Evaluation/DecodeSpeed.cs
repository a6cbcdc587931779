using System.Diagnostics;
using LlmShrink.Model;

namespace LlmShrink.Evaluation;

/// <summary>
/// Generation speed in one line: tokens per second of single-token forward passes after a short prompt, the better of two
/// timed runs (a shared machine slows one now and then). Warm-up first: it pages the weights in and lets the JIT replace
/// the first, unoptimized code of the hot paths. <c>llmshrink bench</c> measures the same in full (spread, bandwidth).
/// </summary>
public static class DecodeSpeed
{
    private const int Prompt = 16, WarmUp = 24, Timed = 32, Runs = 2;

    public static double TokensPerSecond(Transformer transformer, int seed = 0, CancellationToken cancellation = default)
    {
        int vocab = transformer.Config.VocabSize;
        var random = new Random(seed);
        var prompt = Enumerable.Range(0, Prompt).Select(_ => random.Next(vocab)).ToArray();
        var cache = transformer.NewCache(Prompt + Math.Max(WarmUp, Timed));
        var logits = new float[vocab];
        var next = new int[1];
        double best = 0;
        for (int run = -1; run < Runs; run++) // run −1 is the warm-up
        {
            cache.Clear();
            transformer.Forward(prompt, cache, logits);
            int tokens = run < 0 ? WarmUp : Timed;
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < tokens; i++)
            {
                cancellation.ThrowIfCancellationRequested();
                next[0] = random.Next(vocab);
                transformer.Forward(next, cache, logits);
            }
            if (run >= 0) best = Math.Max(best, tokens / clock.Elapsed.TotalSeconds);
        }
        return best;
    }
}
