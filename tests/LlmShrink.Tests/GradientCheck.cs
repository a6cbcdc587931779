using Xunit;

namespace LlmShrink.Tests;

/// <summary>
/// Central finite differences of a double-precision reference, the yardstick for every training gradient:
/// ∂f/∂x_i ≈ (f(x + h e_i) − f(x − h e_i)) / 2h. With h = 1e-5 and f of order 1, the truncation error (h²/6 · f‴ ≈ 1e-11)
/// and the rounding error (ε_double · |f| / h ≈ 1e-11) are far below the float32 rounding of the analytic gradient
/// under test, so the comparison measures the latter.
/// </summary>
public static class GradientCheck
{
    public const double Step = 1e-5;

    /// <summary>∂f/∂x by central differences; x is perturbed in place and restored.</summary>
    public static double[] Numeric(double[] x, Func<double> f) => NumericSample(x, x.Length, f).Gradient;

    /// <summary>
    /// ∂f/∂x_i by central differences at <paramref name="count"/> evenly spaced indices i (every index when x is no
    /// longer); returns the indices and the derivatives.
    /// </summary>
    public static (int[] Indices, double[] Gradient) NumericSample(double[] x, int count, Func<double> f)
    {
        int[] indices = x.Length <= count ? [.. Enumerable.Range(0, x.Length)] : [.. Enumerable.Range(0, count).Select(i => (int)((long)i * x.Length / count))];
        var gradient = new double[indices.Length];
        for (int j = 0; j < indices.Length; j++)
        {
            int i = indices[j];
            double saved = x[i];
            x[i] = saved + Step;
            double plus = f();
            x[i] = saved - Step;
            double minus = f();
            x[i] = saved;
            gradient[j] = (plus - minus) / (2 * Step);
        }
        return (indices, gradient);
    }

    /// <summary>‖analytic − numeric‖₂ / ‖numeric‖₂.</summary>
    public static double RelativeError(ReadOnlySpan<float> analytic, double[] numeric)
    {
        Assert.Equal(numeric.Length, analytic.Length);
        double diff = 0, norm = 0;
        for (int i = 0; i < numeric.Length; i++)
        {
            diff += (analytic[i] - numeric[i]) * (analytic[i] - numeric[i]);
            norm += numeric[i] * numeric[i];
        }
        Assert.True(norm > 0, "the numeric gradient is zero: the check would prove nothing");
        return Math.Sqrt(diff / norm);
    }

    /// <summary>
    /// Asserts the relative error is below <paramref name="bound"/> and returns it. The default bound, 1e-5: an op's
    /// float32 gradient entry comes out of at most ~100 rounded operations in the tests' shapes (dot products of ≤ 20
    /// terms, a softmax over ≤ 11), each adding relative error ≤ u = 6e-8, so even when every rounding adds up it is off
    /// by less than 100·u = 6e-6 relative; errors of both signs make the typical error ~√100·u ≈ 6e-7.
    /// </summary>
    public static double AssertClose(ReadOnlySpan<float> analytic, double[] numeric, string what, double bound = 1e-5)
    {
        double error = RelativeError(analytic, numeric);
        Assert.True(error < bound, $"{what}: relative error {error:E2} ≥ {bound:E0}");
        return error;
    }

    public static float[] RandomFloats(Random random, int count, float scale = 1) =>
        [.. Enumerable.Range(0, count).Select(_ => scale * (2 * random.NextSingle() - 1))];

    public static double[] ToDouble(float[] values) => [.. values.Select(v => (double)v)];
}
