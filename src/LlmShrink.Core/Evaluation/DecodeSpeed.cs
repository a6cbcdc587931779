using LlmShrink.Model;

namespace LlmShrink.Evaluation;

/// <summary>
/// Generation speed in one line: tokens per second of single-token forward passes after a short prompt, timed by
/// <see cref="GenerationBenchmark"/> as <c>llmshrink bench</c> times it, the better of two runs (a shared machine slows
/// one now and then). <c>llmshrink bench</c> reports the same in full (spread, bandwidth).
/// </summary>
public static class DecodeSpeed
{
    private const int Prompt = 16, Timed = 32, Runs = 2;

    public static double TokensPerSecond(Transformer transformer, int seed = 0, CancellationToken cancellation = default) =>
        GenerationBenchmark.Measure(transformer, Prompt, Timed, Runs, seed, cancellation).Max(r => r.GenerationTokensPerSecond);
}
