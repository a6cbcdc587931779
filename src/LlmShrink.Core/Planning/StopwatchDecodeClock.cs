using System.Diagnostics;
using LlmShrink.Evaluation;
using LlmShrink.Kernels;
using LlmShrink.Model;

namespace LlmShrink.Planning;

/// <summary>
/// Decode times measured on this machine. A group's layers are timed at one token, on the threads generation uses, as
/// the median of <see cref="Samples"/> samples of at least <see cref="SampleTime"/> each: a kernel call on a small layer
/// takes microseconds, far below the stopwatch's noise, and the median drops the samples another process interrupted.
/// Timed back to back, a layer that fits in the cache stays there, which in generation (every other layer's weights
/// passing through between two uses) it does not: on tinylit-8m the float layers added up to 0.55 ms per token alone,
/// a tenth of the float model's time per token, so the rest lands in the part no plan changes and predicted speeds are
/// low (emptying the cache before each timed call measured the worker threads waking up instead, 1–8 ms). Layers larger
/// than the cache stream from memory either way. The whole model's speed is <see cref="GenerationBenchmark"/>'s
/// (<c>llmshrink bench --prompt-tokens 64 --gen-tokens 32 -r 5</c>), the best run: other processes and code the JIT
/// has not optimized yet only ever slow a run down (32-token runs of a fresh process: 108 tokens/s, 198 with the JIT's
/// tiering off).
/// </summary>
public sealed class StopwatchDecodeClock(int threads) : IDecodeClock
{
    private const int Samples = 5;
    private static readonly TimeSpan SampleTime = TimeSpan.FromMilliseconds(5);
    /// <summary>Calls before timing: past the JIT's 30 calls that trigger the optimized recompilation of the kernel.</summary>
    private const int WarmUpCalls = 32;
    private const int PromptTokens = 64, GeneratedTokens = 32, Runs = 5;

    public double LayerSeconds(IReadOnlyList<Linear> layers)
    {
        var random = new Random(layers.Count);
        var inputs = layers.Select(l => Enumerable.Range(0, l.InFeatures).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray()).ToArray();
        var outputs = layers.Select(l => new float[l.OutFeatures]).ToArray();
        void Token()
        {
            for (int i = 0; i < layers.Count; i++) layers[i].Apply(inputs[i], outputs[i], 1, WorkerPool.Shared, threads);
        }

        // The warm-up also says how many calls fill a sample.
        var clock = Stopwatch.StartNew();
        int calls = 0;
        for (; calls < WarmUpCalls || clock.Elapsed < SampleTime; calls++) Token();
        int perSample = (int)Math.Ceiling(calls * SampleTime.TotalSeconds / clock.Elapsed.TotalSeconds);

        var seconds = new double[Samples];
        for (int s = 0; s < Samples; s++)
        {
            clock.Restart();
            for (int i = 0; i < perSample; i++) Token();
            seconds[s] = clock.Elapsed.TotalSeconds / perSample;
        }
        Array.Sort(seconds);
        return seconds[Samples / 2];
    }

    public double TokensPerSecond(Transformer model, CancellationToken cancel) =>
        GenerationBenchmark.Measure(model, PromptTokens, GeneratedTokens, Runs, seed: 0, cancel).Max(r => r.GenerationTokensPerSecond);
}
