using LlmShrink.Training;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>AdamW, clipping and the learning-rate schedule against their formulas, computed by hand in double.</summary>
public class TrainingOptimizerTests
{
    /// <summary>
    /// Two AdamW steps on a decayed matrix and an undecayed vector equal Loshchilov &amp; Hutter's Algorithm 2 written out
    /// in double: m_t = β₁m + (1−β₁)g, v_t = β₂v + (1−β₂)g², θ_t = θ − η(m_t/(1−β₁ᵗ) / (√(v_t/(1−β₂ᵗ)) + ε) + λθ).
    /// Bound 1e-6 absolute on values of order 1: the float32 moments and parameters round at 6e-8 relative per step.
    /// </summary>
    [Fact]
    public void AdamW_steps_equal_the_bias_corrected_decoupled_decay_formula()
    {
        const double beta1 = 0.8, beta2 = 0.9, eps = 1e-3, decay = 0.25;
        double[] lrs = [0.1, 0.05];
        var matrix = new Parameter("w", [0.5f, -1.5f, 2f, 0f], 2, 2);
        var vector = new Parameter("norm", [1f, -0.25f], 2);
        float[][] matrixGrads = [[0.3f, -0.2f, 0f, 1f], [-0.1f, -0.2f, 0.4f, 2f]];
        float[][] vectorGrads = [[0.05f, 0.5f], [0.5f, -1f]];
        var optimizer = new AdamW((float)beta1, (float)beta2, (float)eps, (float)decay);

        double[] theta = [0.5, -1.5, 2, 0, 1, -0.25], m = new double[6], v = new double[6];
        for (int t = 1; t <= 2; t++)
        {
            matrixGrads[t - 1].CopyTo(matrix.Grad, 0);
            vectorGrads[t - 1].CopyTo(vector.Grad, 0);
            optimizer.Update([matrix, vector], (float)lrs[t - 1]);
            double[] g = [.. matrixGrads[t - 1].Concat(vectorGrads[t - 1]).Select(x => (double)x)];
            for (int i = 0; i < 6; i++)
            {
                double b1 = (float)beta1, b2 = (float)beta2, lambda = i < 4 ? (float)decay : 0; // the vector is not decayed
                m[i] = b1 * m[i] + (1 - b1) * g[i];
                v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
                double mHat = m[i] / (1 - Math.Pow(b1, t)), vHat = v[i] / (1 - Math.Pow(b2, t));
                theta[i] -= (float)lrs[t - 1] * (mHat / (Math.Sqrt(vHat) + (float)eps) + lambda * theta[i]);
            }
            float[] actual = [.. matrix.Value, .. vector.Value];
            for (int i = 0; i < 6; i++) Assert.Equal(theta[i], actual[i], 1e-6);
        }
        Assert.Equal(2, optimizer.Step);
    }

    [Fact]
    public void AdamW_first_step_by_hand()
    {
        var p = new Parameter("w", [0.5f], 1, 1);
        p.Grad[0] = 0.3f;
        new AdamW(0.9f, 0.999f, 1e-3f, 0.25f).Update([p], 0.1f);
        // m̂ = g and v̂ = g² after bias correction, so θ = 0.5 − 0.1·(0.3/(0.3 + 0.001) + 0.25·0.5).
        Assert.Equal(0.5 - 0.1 * (0.3 / 0.301 + 0.125), p.Value[0], 1e-6);
    }

    [Fact]
    public void Clipping_scales_to_the_global_norm_only_above_it()
    {
        var a = new Parameter("a", new float[2], 2);
        var b = new Parameter("b", new float[1], 1, 1);
        (a.Grad[0], a.Grad[1], b.Grad[0]) = (3, 4, 12); // ‖g‖ = 13
        Assert.Equal(13, GradientClipping.ClipGlobalNorm([a, b], 6.5), 12);
        Assert.Equal([1.5f, 2f, 6f], [.. a.Grad, .. b.Grad]);
        Assert.Equal(6.5, GradientClipping.ClipGlobalNorm([a, b], 10), 6);
        Assert.Equal([1.5f, 2f, 6f], [.. a.Grad, .. b.Grad]);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(15)]
    [InlineData(16)]
    [InlineData(1_000_003)]
    public void Gradient_sum_of_squares_matches_the_scalar_sum(int count)
    {
        var random = new Random(count);
        var values = Enumerable.Range(0, count).Select(_ => (2 * random.NextSingle() - 1) * 1e-3f).ToArray();
        double expected = GradientClipping.SumOfSquaresReference(values);
        Assert.Equal(expected, GradientClipping.SumOfSquares(values), Math.Max(expected, 1e-300) * 1e-12);
    }

    [Fact]
    public void Schedule_warms_up_linearly_then_follows_the_cosine_to_the_minimum()
    {
        var schedule = new LearningRateSchedule(MaxLr: 1e-3f, MinLr: 1e-4f, WarmupSteps: 4, TotalSteps: 104);
        Assert.Equal(0.25e-3f, schedule.At(0));
        Assert.Equal(1e-3f, schedule.At(3));
        Assert.Equal(1e-3f, schedule.At(4), 1e-9f);                   // progress 0: cos 0 = 1
        Assert.Equal(0.55e-3f, schedule.At(54), 1e-9f);               // progress ½: the midpoint of max and min
        Assert.Equal(1e-4 + 0.45e-3 * (1 + Math.Cos(Math.PI * 0.25)), schedule.At(29), 1e-9);
        Assert.Equal(1e-4f, schedule.At(104));
        Assert.Equal(1e-4f, schedule.At(500));
    }
}
