using System.Runtime.InteropServices;

namespace LlmShrink.LinearAlgebra;

/// <summary>
/// The layer Hessian H = 2XXᵀ/n made ready for the Optimal Brain Surgeon column walks of GPTQ (Frantar et al. 2022,
/// §4 "Cholesky reformulation") and SparseGPT (Frantar and Alistarh 2023, Algorithm 1), which share it: dead inputs neutralized,
/// H dampened, then replaced in place by U, the upper Cholesky factor of H⁻¹, in float32.
/// </summary>
static class InverseHessianFactor
{
    /// <summary>
    /// Dead inputs (never active in calibration): H_ii = 1 keeps H invertible; their weights cannot matter, so they are
    /// zeroed in W [rows, n].
    /// </summary>
    public static void NeutralizeDeadInputs(double[] h, float[] weights, int rows, int n)
    {
        for (int i = 0; i < n; i++)
        {
            if (h[i * n + i] != 0) continue;
            h[i * n + i] = 1;
            for (int r = 0; r < rows; r++) weights[r * n + i] = 0;
        }
    }

    /// <summary>
    /// Adds λ = percentDamp · mean(diag H) to H's diagonal, overwrites H with U (UᵀU = H⁻¹), then U with its float32
    /// copy, which <see cref="Float32"/> reads: no second n×n matrix is allocated (a 7B down_proj's H is 11008² float64 ≈ 1 GB).
    /// </summary>
    public static void DampenAndFactor(double[] h, int n, double percentDamp)
    {
        double damp = 0;
        for (int i = 0; i < n; i++) damp += h[i * n + i];
        damp = percentDamp * damp / n;
        for (int i = 0; i < n; i++) h[i * n + i] += damp;

        Cholesky.InverseUpperFactorInPlace(h, n);
        // U in float32 overwrites the float64 U from the front: float k (bytes 4k..4k+4) only covers doubles ≤ k, already read.
        var u32 = MemoryMarshal.Cast<double, float>(h.AsSpan());
        for (int k = 0; k < n * n; k++) u32[k] = (float)h[k];
    }

    /// <summary>U in float32, row-major [n, n], as <see cref="DampenAndFactor"/> left it in <paramref name="h"/>.</summary>
    public static Span<float> Float32(double[] h, int n) => MemoryMarshal.Cast<double, float>(h.AsSpan())[..(n * n)];
}
