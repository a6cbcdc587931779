using System.Runtime.Intrinsics;

namespace LlmShrink.Kernels;

/// <summary>
/// The gated MLP activation of Llama (Shazeer 2020, "GLU Variants Improve Transformer"):
/// gate ← SiLU(gate) · up, where SiLU(g) = g · σ(g) = g / (1 + e^(−g)).
/// </summary>
public static class SwiGlu
{
    public static void Apply(Span<float> gate, ReadOnlySpan<float> up)
    {
        int n = gate.Length, i = 0;
        if (up.Length < n) throw new ArgumentException("up is shorter than gate", nameof(up));
        if (Vector512.IsHardwareAccelerated)
        {
            ref float g = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(gate);
            ref float u = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(up);
            for (; i <= n - 16; i += 16)
            {
                var gv = Vector512.LoadUnsafe(ref g, (nuint)i);
                var uv = Vector512.LoadUnsafe(ref u, (nuint)i);
                (gv / (Vector512<float>.One + Vector512.Exp(-gv)) * uv).StoreUnsafe(ref g, (nuint)i);
            }
        }
        for (; i < n; i++) gate[i] = gate[i] / (1f + MathF.Exp(-gate[i])) * up[i];
    }

    public static void Reference(Span<float> gate, ReadOnlySpan<float> up)
    {
        for (int i = 0; i < gate.Length; i++)
        {
            double g = gate[i];
            gate[i] = (float)(g / (1 + Math.Exp(-g)) * up[i]);
        }
    }
}
