using LlmShrink.Model;

namespace LlmShrink.Planning;

/// <summary>
/// Where the planner's decode times come from: <see cref="StopwatchDecodeClock"/> on this machine, or a stand-in that
/// makes them exact (tests), so that what the planner does with times can be checked without timing anything.
/// </summary>
public interface IDecodeClock
{
    /// <summary>Seconds one generated token (one row, n = 1) takes through <paramref name="layers"/>, applied one after another.</summary>
    double LayerSeconds(IReadOnlyList<Linear> layers);

    /// <summary>The whole model's generation speed, tokens per second.</summary>
    double TokensPerSecond(Transformer model, CancellationToken cancel);
}
