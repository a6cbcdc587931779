namespace LlmShrink.Training;

/// <summary>
/// SwiGLU (Shazeer 2020): y = SiLU(g)·u with SiLU(g) = g·σ(g). The forward keeps g and u. Backward, with
/// SiLU′(g) = σ(g)·(1 + g·(1 − σ(g))): dg = dy·u·SiLU′(g), du = dy·SiLU(g).
/// </summary>
public static class SwiGluOp
{
    /// <summary>y = SiLU(gate)·up, as <see cref="Kernels.SwiGlu"/> computes it for inference.</summary>
    public static void Forward(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> y)
    {
        gate.CopyTo(y);
        Kernels.SwiGlu.Apply(y[..gate.Length], up);
    }

    /// <summary>Adds the gradients into <paramref name="dGate"/> and <paramref name="dUp"/>.</summary>
    public static void Backward(ReadOnlySpan<float> dy, ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> dGate, Span<float> dUp)
    {
        for (int i = 0; i < gate.Length; i++)
        {
            float g = gate[i], sigma = 1f / (1f + MathF.Exp(-g));
            dGate[i] += dy[i] * up[i] * sigma * (1f + g * (1f - sigma));
            dUp[i] += dy[i] * g * sigma;
        }
    }
}
