using System.Runtime.Intrinsics;

namespace LlmShrink.LinearAlgebra;

/// <summary>
/// Roots of the secular equation f(λ) = 1 + ρ·Σ_j z_j²/(d_j − λ) = 0 for d₀ &lt; d₁ &lt; … and ρ &gt; 0: the eigenvalues of
/// diag(d) + ρ·z·zᵀ, one in each (d_i, d_{i+1}) and the last in (d_{k−1}, d_{k−1} + ρ‖z‖²] (LAPACK dlaed4).
///
/// f increases from −∞ to +∞ across each interval. The root is sought as λ = d_o + μ from the pole d_o nearer to it
/// (found by the sign of f at the interval's middle), so that d_j − λ = (d_j − d_o) − μ keeps full relative accuracy
/// where it is smallest, which the eigenvector formula needs. Each step models the two sums on either side of the
/// root by one pole each, matching their values and slopes (the "fixed weight" rational model of Bunch, Nielsen &amp;
/// Sorensen 1978, two-pole form as in Li's "middle way"), and solves the model's quadratic; the step is kept inside a
/// bracket that every evaluation of f narrows, and a bisection replaces any step that would leave it.
/// </summary>
static class SecularEquation
{
    const double Epsilon = 1.1102230246251565e-16;
    const int MaxIterations = 200;

    /// <summary>Root <paramref name="i"/>; <paramref name="differences"/>[j] receives d_j − λ_i.</summary>
    public static double Root(int i, ReadOnlySpan<double> d, ReadOnlySpan<double> z, double rho, Span<double> differences)
    {
        int k = d.Length;
        bool last = i == k - 1;
        int origin;
        double lo, hi;
        if (last)
        {
            double norm = 0;
            foreach (var x in z) norm += x * x;
            origin = i;
            lo = 0;
            hi = rho * norm;
        }
        else
        {
            double gap = d[i + 1] - d[i], middle = 0.5 * gap;
            if (Evaluate(d, z, rho, i, i, middle, differences).F >= 0)
            {
                origin = i;
                lo = 0;
                hi = middle;
            }
            else
            {
                origin = i + 1;
                lo = middle - gap;
                hi = 0;
            }
        }
        double mu = 0.5 * (lo + hi);
        for (int iteration = 0; iteration < MaxIterations; iteration++)
        {
            var (f, left, leftSlope, right, rightSlope, scale) = Evaluate(d, z, rho, origin, i, mu, differences);
            if (Math.Abs(f) <= 8 * Epsilon * scale) break;
            if (f < 0) lo = mu; else hi = mu;
            if (hi - lo <= 2 * Epsilon * Math.Max(Math.Abs(lo), Math.Abs(hi))) break;
            double next = last
                ? OnePoleStep(d[i] - d[origin], mu, left, leftSlope, rho)
                : TwoPoleStep(d[i] - d[origin], d[i + 1] - d[origin], mu, left, leftSlope, right, rightSlope, rho, lo, hi);
            mu = next > lo && next < hi ? next : 0.5 * (lo + hi);
        }
        for (int j = 0; j < k; j++) differences[j] = (d[j] - d[origin]) - mu;
        return d[origin] + mu;
    }

    /// <summary>
    /// f at λ = d_origin + μ, with ψ (the poles j ≤ i, left of the root) and φ (j &gt; i) and their derivatives; the scale
    /// is 1 + ρ·Σ|z_j²/(d_j − λ)|, the size of the rounding error of f. <paramref name="differences"/> is scratch.
    /// </summary>
    static (double F, double Psi, double PsiSlope, double Phi, double PhiSlope, double Scale) Evaluate(
        ReadOnlySpan<double> d, ReadOnlySpan<double> z, double rho, int origin, int i, double mu, Span<double> differences)
    {
        var (psi, psiSlope) = Sums(d[..(i + 1)], z[..(i + 1)], d[origin], mu, differences[..(i + 1)]);
        var (phi, phiSlope) = Sums(d[(i + 1)..], z[(i + 1)..], d[origin], mu, differences[(i + 1)..]);
        double f = 1 + rho * (psi + phi);
        return (f, psi, psiSlope, phi, phiSlope, 1 + rho * (phi - psi) + Math.Abs(f));
    }

    /// <summary>Σ z_j²/δ_j and Σ (z_j/δ_j)² with δ_j = (d_j − d₀) − μ, which go into <paramref name="differences"/>.</summary>
    static unsafe (double Sum, double Slope) Sums(ReadOnlySpan<double> d, ReadOnlySpan<double> z, double d0, double mu, Span<double> differences)
    {
        int j = 0, count = d.Length;
        double sum = 0, slope = 0;
        fixed (double* pd = d, pz = z, pdiff = differences)
        {
            if (Vector512.IsHardwareAccelerated && count >= 8)
            {
                Vector512<double> sums = Vector512<double>.Zero, slopes = Vector512<double>.Zero;
                var origin = Vector512.Create(d0);
                var shift = Vector512.Create(mu);
                for (; j + 8 <= count; j += 8)
                {
                    var delta = (Vector512.Load(pd + j) - origin) - shift;
                    delta.Store(pdiff + j);
                    var zj = Vector512.Load(pz + j);
                    var t = zj / delta;
                    sums = Vector512.FusedMultiplyAdd(zj, t, sums);
                    slopes = Vector512.FusedMultiplyAdd(t, t, slopes);
                }
                sum = Vector512.Sum(sums);
                slope = Vector512.Sum(slopes);
            }
            for (; j < count; j++)
            {
                double delta = (pd[j] - d0) - mu, t = pz[j] / delta;
                pdiff[j] = delta;
                sum += pz[j] * t;
                slope += t * t;
            }
        }
        return (sum, slope);
    }

    /// <summary>
    /// The last root: ψ ≈ p + q/(a − μ) matched at μ (q = ψ'·(a − μ)², p = ψ − q/(a − μ)), then 1 + ρ(p + q/(a − μ)) = 0.
    /// </summary>
    static double OnePoleStep(double a, double mu, double psi, double psiSlope, double rho)
    {
        double da = a - mu, q = psiSlope * da * da, p = psi - q / da, c = 1 + rho * p;
        return c > 0 ? a + rho * q / c : double.NaN;
    }

    /// <summary>
    /// An inner root: ψ ≈ p₁ + q₁/(a − μ) and φ ≈ p₂ + q₂/(b − μ) matched at μ; the model
    /// c + Q/(a − μ − η) + S/(b − μ − η) = 0 is the quadratic c·η² − B·η + C = 0 in the step η, of which the root that stays
    /// in the bracket is taken (in the cancellation-free form).
    /// </summary>
    static double TwoPoleStep(double a, double b, double mu, double psi, double psiSlope, double phi, double phiSlope,
        double rho, double lo, double hi)
    {
        double da = a - mu, db = b - mu;
        double q1 = psiSlope * da * da, p1 = psi - q1 / da, q2 = phiSlope * db * db, p2 = phi - q2 / db;
        double c = 1 + rho * (p1 + p2), bigQ = rho * q1, bigS = rho * q2;
        double bCoefficient = c * (da + db) + bigQ + bigS, cCoefficient = c * da * db + bigQ * db + bigS * da;
        if (c == 0) return mu + cCoefficient / bCoefficient;
        double discriminant = bCoefficient * bCoefficient - 4 * c * cCoefficient;
        if (discriminant < 0) return double.NaN;
        double root = Math.Sqrt(discriminant), sum = bCoefficient >= 0 ? bCoefficient + root : bCoefficient - root;
        double eta1 = sum / (2 * c), eta2 = 2 * cCoefficient / sum;
        double first = mu + eta2, second = mu + eta1;
        return first > lo && first < hi ? first : second;
    }
}
