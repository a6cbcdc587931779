using System.Diagnostics;
using LlmShrink.Model;

namespace LlmShrink.Evaluation;

/// <summary>
/// Prompt processing and generation timed the way <c>llmshrink bench</c> times them, so that every speed LlmShrink
/// reports (bench, <c>compress --eval</c>, the planner's <c>--min-tokens-per-s</c>) is the same measurement: random
/// token ids; a warm-up; then each run clears the KV cache, processes the prompt in one batched forward pass and
/// generates tokens one at a time, each timed as a whole.
/// </summary>
public static class GenerationBenchmark
{
    /// <summary>Decode warm-up: up to this many tokens, and at least two, within <see cref="WarmUpTime"/> (a 7B F32 token takes seconds).</summary>
    private const int WarmUpTokens = 16;
    private static readonly TimeSpan WarmUpTime = TimeSpan.FromSeconds(2);

    /// <summary>One run's rates.</summary>
    public readonly record struct Rates(double PromptTokensPerSecond, double GenerationTokensPerSecond);

    public static IReadOnlyList<Rates> Measure(Transformer transformer, int promptTokens, int generatedTokens, int runs, int seed, CancellationToken cancellation = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(promptTokens, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(generatedTokens, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(runs, 1);
        int vocab = transformer.Config.VocabSize;
        var random = new Random(seed);
        var promptIds = new int[promptTokens];
        for (int i = 0; i < promptTokens; i++) promptIds[i] = random.Next(vocab);
        int warmUpPrompt = Math.Min(promptTokens, 16);
        var cache = transformer.NewCache(Math.Max(promptTokens + generatedTokens, warmUpPrompt + WarmUpTokens));
        var logits = new float[vocab];

        // Warm-up: pages the weights in and lets the JIT replace the first, unoptimized code of the hot paths (it
        // recompiles a method after 30 calls, in the background, once no new method has started for 100 ms), so
        // neither is timed. One decode token was too little: the first timed tokens still ran tier-0 code.
        transformer.Forward(promptIds.AsSpan(0, warmUpPrompt), cache, logits);
        var warmUp = Stopwatch.StartNew();
        for (int i = 0; i < WarmUpTokens && (i < 2 || warmUp.Elapsed < WarmUpTime); i++)
        {
            cancellation.ThrowIfCancellationRequested();
            transformer.Forward(promptIds.AsSpan(i % promptTokens, 1), cache, logits);
        }
        cancellation.ThrowIfCancellationRequested();

        var rates = new Rates[runs];
        var next = new int[1];
        for (int run = 0; run < runs; run++)
        {
            cache.Clear();
            var clock = Stopwatch.StartNew();
            transformer.Forward(promptIds, cache, logits);
            double prompt = promptTokens / clock.Elapsed.TotalSeconds;

            clock.Restart();
            for (int i = 0; i < generatedTokens; i++)
            {
                cancellation.ThrowIfCancellationRequested();
                next[0] = random.Next(vocab);
                transformer.Forward(next, cache, logits);
            }
            rates[run] = new Rates(prompt, generatedTokens / clock.Elapsed.TotalSeconds);
        }
        return rates;
    }
}
