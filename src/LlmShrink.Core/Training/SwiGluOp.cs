using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

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

    /// <summary>Adds the gradients into <paramref name="dGate"/> and <paramref name="dUp"/>, eight values at a time.</summary>
    public static void Backward(ReadOnlySpan<float> dy, ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> dGate, Span<float> dUp)
    {
        int n = gate.Length, i = 0;
        if (dy.Length < n || up.Length < n || dGate.Length < n || dUp.Length < n) throw new ArgumentException("dy, up and the gradients must be as long as gate");
        ref float pdy = ref MemoryMarshal.GetReference(dy), pg = ref MemoryMarshal.GetReference(gate), pu = ref MemoryMarshal.GetReference(up);
        ref float pdg = ref MemoryMarshal.GetReference(dGate), pdu = ref MemoryMarshal.GetReference(dUp);
        var one = Vector256<float>.One;
        for (; i <= n - 8; i += 8)
        {
            var g = Vector256.LoadUnsafe(ref pg, (nuint)i);
            var d = Vector256.LoadUnsafe(ref pdy, (nuint)i);
            var sigma = one / (one + Vector256.Exp(-g));
            (Vector256.LoadUnsafe(ref pdg, (nuint)i) + d * Vector256.LoadUnsafe(ref pu, (nuint)i) * sigma * (one + g * (one - sigma))).StoreUnsafe(ref pdg, (nuint)i);
            (Vector256.LoadUnsafe(ref pdu, (nuint)i) + d * g * sigma).StoreUnsafe(ref pdu, (nuint)i);
        }
        for (; i < n; i++)
        {
            float g = gate[i], sigma = 1f / (1f + MathF.Exp(-g));
            dGate[i] += dy[i] * up[i] * sigma * (1f + g * (1f - sigma));
            dUp[i] += dy[i] * g * sigma;
        }
    }
}
