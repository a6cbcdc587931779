using LlmShrink.Model;
using LlmShrink.Planning;

namespace LlmShrink.Tests;

/// <summary>
/// A decode clock for tests: a token takes one nanosecond per weight byte its layers stream, plus <paramref name="fixedSeconds"/>
/// for the rest of the model. Exact and repeatable, so what the planner does with times is checked without timing anything
/// (a shared machine's timings are noise to a test).
/// </summary>
public sealed class BytesDecodeClock(double fixedSeconds) : IDecodeClock
{
    private const double SecondsPerByte = 1e-9;

    public double LayerSeconds(IReadOnlyList<Linear> layers) => layers.Sum(l => l.WeightBytes) * SecondsPerByte;

    public double TokensPerSecond(Transformer model, CancellationToken cancel) =>
        1 / (fixedSeconds + LayerSeconds([.. model.Blocks.SelectMany(b => b.Linears), model.LmHead]));
}
