namespace LlmShrink.Planning;

/// <summary>
/// The planner's decode-time model, measured with the rest of <see cref="MeasurementTable"/>: a generated token takes a
/// fixed part no plan changes plus the planned groups' times, each group's as timed alone at one token
/// (<see cref="IDecodeClock.LayerSeconds"/>), and the groups' times add up. The fixed part — embedding lookup, norms,
/// RoPE, attention over the cache, lm_head when it is not planned, the logits — is not timed piece by piece: it is the
/// float model's measured time per token minus the sum of its groups' times (the "keep" candidates').
/// </summary>
/// <param name="FloatTokensPerSecond">The model as stored, generating on this machine.</param>
/// <param name="FloatSeconds">Each group's time per token as stored.</param>
public sealed record DecodeTiming(double FloatTokensPerSecond, double[] FloatSeconds)
{
    /// <summary>
    /// Seconds per token no plan changes. Never below zero: timed apart, on a shared machine, the groups can add up to
    /// more than the whole.
    /// </summary>
    public double FixedSeconds => Math.Max(0, 1 / FloatTokensPerSecond - FloatSeconds.Sum());

    /// <summary>Tokens per second of a plan whose groups take <paramref name="plannedSeconds"/> per token.</summary>
    public double PredictedTokensPerSecond(double plannedSeconds) => 1 / (FixedSeconds + plannedSeconds);

    /// <summary>Seconds per token the planned groups may take for <paramref name="tokensPerSecond"/> (below zero when the fixed part alone is slower).</summary>
    public double PlannedBudget(double tokensPerSecond) => 1 / tokensPerSecond - FixedSeconds;

    /// <summary>A time as the knapsack's integer cost: nanoseconds, far finer than the timings' noise.</summary>
    public static long Nanoseconds(double seconds) => (long)Math.Round(seconds * 1e9);
}
