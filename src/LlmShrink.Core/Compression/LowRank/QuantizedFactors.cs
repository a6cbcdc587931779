using System.Numerics.Tensors;
using LlmShrink.Compression.Quantization;
using LlmShrink.LinearAlgebra;

namespace LlmShrink.Compression.LowRank;

/// <summary>
/// Factors whose values are themselves quantized, so a low-rank layer costs rank·(m + n)·bits instead of 16 bits per value.
/// V [rank, in] reads the layer's input x, so GPTQ quantizes it against H = XXᵀ. U [out, rank] reads z = V̂x, so it is
/// first refitted to what the layer must output given that z — the least-squares update U* = W·H·V̂ᵀ·(V̂·H·V̂ᵀ)⁻¹, which
/// minimizes ‖W·X − U·V̂·X‖_F (the closed-form factor update of SVD-LLM, Wang et al. 2024, here absorbing V's rounding) —
/// and then quantized by GPTQ against its own input Gram matrix V̂·H·V̂ᵀ.
/// </summary>
public static class QuantizedFactors
{
    /// <summary>The quantized factors (U, V) of <paramref name="factors"/> for the layer weight <paramref name="w"/> [m, n] and input Gram matrix <paramref name="h"/> [n, n].</summary>
    public static (QuantizedMatrix U, QuantizedMatrix V) Quantize(float[] w, LowRankFactors factors, ReadOnlySpan<double> h, QuantScheme scheme, GptqOptions options)
    {
        int m = factors.Rows, n = factors.Columns, r = factors.Rank;
        var v = Gptq.Quantize(factors.V, r, n, h, scheme, options);
        var vHat = Array.ConvertAll(v.Dequantize(), x => (double)x);

        // P = V̂·H [r, n]: P[k, i] = V̂[k, ·]·H[·, i] = V̂[k, ·]·H[i, ·] (H symmetric), so every entry is a dot of two rows.
        var hRows = h.ToArray();
        var p = new double[(long)r * n];
        Parallel.For(0, r, k =>
        {
            var vk = vHat.AsSpan(k * n, n);
            for (int i = 0; i < n; i++) p[k * n + i] = TensorPrimitives.Dot<double>(vk, hRows.AsSpan(i * n, n));
        });
        // Gram matrix of U's inputs, G = P·V̂ᵀ = V̂·H·V̂ᵀ [r, r], and the target T = W·Pᵀ = W·H·V̂ᵀ [m, r].
        var gram = new double[r * r];
        Parallel.For(0, r, k =>
        {
            for (int l = 0; l < r; l++) gram[k * r + l] = TensorPrimitives.Dot<double>(p.AsSpan(k * n, n), vHat.AsSpan(l * n, n));
        });
        var u = new float[(long)m * r];
        var dampened = (double[])gram.Clone();
        Dampen(dampened, r, options.PercentDamp);
        Cholesky.FactorLower(dampened, r);
        Parallel.For(0, m, () => (new double[n], new double[r]), (row, _, scratch) =>
        {
            var (wRow, t) = scratch;
            for (int i = 0; i < n; i++) wRow[i] = w[row * n + i];
            for (int k = 0; k < r; k++) t[k] = TensorPrimitives.Dot<double>(wRow, p.AsSpan(k * n, n));
            SolveWithFactor(dampened, r, t);
            for (int k = 0; k < r; k++) u[row * r + k] = (float)t[k];
            return scratch;
        }, _ => { });
        return (Gptq.QuantizeConsumingHessian(u, m, r, gram, scheme, options), v);
    }

    /// <summary>λ = percentDamp·mean(diag G) on the diagonal, as GPTQ dampens its Hessian, so a rank-deficient V̂·H·V̂ᵀ still factors.</summary>
    private static void Dampen(double[] g, int r, double percentDamp)
    {
        double mean = 0;
        for (int i = 0; i < r; i++) mean += g[i * r + i];
        double lambda = Math.Max(percentDamp * mean / r, 1e-12);
        for (int i = 0; i < r; i++) g[i * r + i] += lambda;
    }

    /// <summary>x ← G⁻¹·x for G = LLᵀ (L lower, row-major): forward substitution with L, then back substitution with Lᵀ.</summary>
    private static void SolveWithFactor(double[] l, int r, double[] x)
    {
        for (int i = 0; i < r; i++) x[i] = (x[i] - TensorPrimitives.Dot<double>(l.AsSpan(i * r, i), x.AsSpan(0, i))) / l[i * r + i];
        for (int i = r - 1; i >= 0; i--)
        {
            double s = x[i];
            for (int k = i + 1; k < r; k++) s -= l[k * r + i] * x[k];
            x[i] = s / l[i * r + i];
        }
    }
}
