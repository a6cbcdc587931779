using LlmShrink.Compression.LowRank;

namespace LlmShrink.Analysis;

/// <summary>The smallest rank r whose leading singular values hold the fraction <paramref name="Energy"/> of Σσ².</summary>
/// <param name="OfMinDimension">r / min(m, n).</param>
/// <param name="OfBreakEven">r / (mn/(m + n)): below 1, factors of rank r store fewer values than the matrix.</param>
public sealed record EffectiveRank(double Energy, int Rank, double OfMinDimension, double OfBreakEven);

/// <summary>The singular values of one matrix (raw W or whitened W·L) and what they say about truncating it.</summary>
/// <param name="Energy">Σσᵢ² (raw: ‖W‖_F²; whitened: the mean squared output norm per calibration token, E‖W x‖²).</param>
/// <param name="EnergyAtHalfParameters">
/// Σ_{i &lt; r} σᵢ² / Σσᵢ² at r = ⌊mn/(2(m + n))⌋, the rank whose factors store half the matrix's values: for the whitened
/// spectrum, 1 − this is the relative output error of svd-llm at ratio 0.5 (the "half rank" sensitivity's proxy).
/// </param>
/// <param name="SingularValues">σ, descending, min(m, n) values.</param>
public sealed record Spectrum(double Energy, IReadOnlyList<EffectiveRank> EffectiveRanks, double EnergyAtHalfParameters, double[] SingularValues);

/// <summary>
/// The spectra of one block linear W [m, n]: of W itself, and of W·L with LLᵀ = XXᵀ/N on the block's N calibration
/// inputs X (SVD-LLM's truncation-aware whitening, Wang et al. 2024, §3.1). Truncating W·L's SVD drops exactly the
/// output error ‖(W − W′)X‖²/N (<see cref="InputTransform"/>), so the whitened spectrum is the one that says how well
/// a low-rank factorization can keep the layer's outputs; the raw one says how far plain SVD of the weights would get.
/// </summary>
public static class SpectrumAnalysis
{
    /// <summary>The energy fractions of the effective ranks: 90, 95 and 99 %.</summary>
    public static readonly double[] EnergyLevels = [0.90, 0.95, 0.99];

    public static Spectrum Raw(float[] w, int rows, int columns, int threads) =>
        Of(GramSpectrum.SingularValues(InputTransform.Identity(columns).Apply(w, rows), rows, columns, threads), rows, columns);

    /// <param name="whitening">L with LLᵀ = H + λI for GPTQ's H = (2/N)·XXᵀ of the layer's inputs (<see cref="Compression.SiteStatistics.Whitening"/>).</param>
    public static Spectrum Whitened(float[] w, int rows, int columns, WhiteningTransform whitening, int threads)
    {
        var sigma = GramSpectrum.SingularValues(whitening.Apply(w, rows), rows, columns, threads);
        // L·Lᵀ = H = 2·XXᵀ/N, so σ(W·L)/√2 are the singular values for XXᵀ/N: Σσ² = E‖W x‖², the unit of an output energy.
        for (int i = 0; i < sigma.Length; i++) sigma[i] /= Math.Sqrt(2);
        return Of(sigma, rows, columns);
    }

    /// <summary>Effective ranks and the energy kept at half the parameters, from σ descending.</summary>
    public static Spectrum Of(double[] sigma, int rows, int columns)
    {
        var cumulative = new double[sigma.Length + 1]; // cumulative[r] = Σ_{i < r} σᵢ²
        for (int i = 0; i < sigma.Length; i++) cumulative[i + 1] = cumulative[i] + sigma[i] * sigma[i];
        double energy = cumulative[^1];
        int k = Math.Min(rows, columns);
        double breakEven = LowRankFactors.BreakEvenRank(rows, columns);
        var ranks = EnergyLevels.Select(p =>
        {
            int r = EffectiveRankOf(cumulative, p);
            return new EffectiveRank(p, r, (double)r / k, r / breakEven);
        }).ToList();
        int half = LowRankFactors.RankForRatio(rows, columns, 0.5);
        return new Spectrum(energy, ranks, energy > 0 ? cumulative[Math.Min(half, sigma.Length)] / energy : 1, sigma);
    }

    /// <summary>The smallest r with Σ_{i &lt; r} σᵢ² ≥ p·Σσ² (0 for a zero matrix).</summary>
    private static int EffectiveRankOf(double[] cumulative, double p)
    {
        double target = p * cumulative[^1];
        int r = 0;
        while (r < cumulative.Length - 1 && cumulative[r] < target) r++;
        return r;
    }
}
