using LlmShrink.Compression.Quantization;
using LlmShrink.Training;
using Xunit;
using Xunit.Abstractions;
using static LlmShrink.Tests.GradientCheck;

namespace LlmShrink.Tests;

/// <summary>
/// The fake-quantized linear layer (<see cref="FakeQuantization"/> through <see cref="LinearOp"/>): its gradients against
/// finite differences of double-precision references, and its re-packing against the forward it computed. The layer is
/// 3-bit, 32 × 64 (GPTQ packs 3 bits in whole words: 32 rows) in two groups of 32 whose columns are interleaved by a shuffled g_idx (act-order), so a group is never a run
/// of columns. Latent weights (in grid steps) sit at least 0.1 away from every rounding boundary, with some beyond the grid's
/// ends (clamped), and scales are float16 values: there the forward is locally smooth in everything it is smooth in, and
/// central differences (step 1e-5) never cross a boundary.
/// </summary>
public class FakeQuantizationTests(ITestOutputHelper output)
{
    private const int Rows = 32, Columns = 64, Groups = 2, Tokens = 4, Bits = 3, MaxCode = 7;

    private void Report(string what, double error) => output.WriteLine($"{what}: relative error {error:E2}");

    /// <summary>A stored 3-bit layer: float16 scales in [0.05, 0.15], zeros 4 (symmetric) or random in 1..6, a shuffled g_idx, random codes.</summary>
    private static QuantizedMatrix Stored(Random random, bool symmetric)
    {
        var groupIndex = Enumerable.Range(0, Columns).Select(c => c % Groups).OrderBy(_ => random.Next()).ToArray();
        var scales = Enumerable.Range(0, Groups * Rows).Select(_ => (float)(Half)(0.05f + 0.1f * random.NextSingle())).ToArray();
        var zeros = Enumerable.Range(0, Groups * Rows).Select(_ => symmetric ? 4 : random.Next(1, MaxCode)).ToArray();
        var codes = Enumerable.Range(0, Rows * Columns).Select(_ => (byte)random.Next(MaxCode + 1)).ToArray();
        return new QuantizedMatrix(Rows, Columns, QuantScheme.Grouped(Bits, 32, symmetric), Groups, codes, scales, zeros, groupIndex);
    }

    /// <summary>Latent weights u ∈ [−z − 2, 7 − z + 2] (a few clamped), at most 0.4 from an integer.</summary>
    private static float[] Latent(Random random, QuantizedMatrix m)
    {
        var w = new float[Rows * Columns];
        for (int r = 0; r < Rows; r++)
            for (int c = 0; c < Columns; c++)
            {
                int k = m.GroupIndex[c] * Rows + r;
                int level = random.Next(-m.Zeros[k] - 2, MaxCode - m.Zeros[k] + 3);
                w[r * Columns + c] = level + 0.8f * (random.NextSingle() - 0.5f);
            }
        return w;
    }

    private static double Project(float[] dy, double[] y)
    {
        double sum = 0;
        for (int i = 0; i < y.Length; i++) sum += dy[i] * y[i];
        return sum;
    }

    /// <summary>Σ dY ⊙ (X·Wᵀ + b) in double.</summary>
    private static double Linear(float[] dy, double[] x, Func<int, double> weight, double[] bias)
    {
        var y = new double[Tokens * Rows];
        for (int n = 0; n < Tokens; n++)
            for (int r = 0; r < Rows; r++)
            {
                double sum = bias[r];
                for (int c = 0; c < Columns; c++) sum += x[n * Columns + c] * weight(r * Columns + c);
                y[n * Rows + r] = sum;
            }
        return Project(dy, y);
    }

    /// <summary>
    /// Weights and scales: dX, the latent weights', the scales' and (asymmetric) the zero points' gradients against central
    /// differences of the straight-through reference — the fake-quant forward with the rounding residue round(u) − u, the
    /// clamped codes and the in-grid/clamped pattern held at their values at the point (PyTorch's x + (round(x) − x).detach()):
    /// Ŵ = s·(u + round(u₀) − u₀) inside the grid, s·(q_clamped − z) outside, whose derivatives are exactly the estimator's.
    /// And the scales' gradient against the true function (rounding live, double): with u in grid steps it is the true
    /// derivative, Σ G·(q − z), not LSQ's Σ G·(round(v) − v), which would vanish on the grid points a GPTQ student starts at.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Weights_and_scales_gradients_match_the_straight_through_reference(bool symmetric)
    {
        var random = new Random(symmetric ? 11 : 12);
        var stored = Stored(random, symmetric);
        var latent = Latent(random, stored);
        var quantization = new FakeQuantization("w", stored, QuantizedTraining.WeightsAndScales);
        Assert.Equal(symmetric, quantization.Zeros is null);
        var weight = new Parameter("w.weight", latent, Rows, Columns);
        weight.Quantize(quantization);
        var bias = new Parameter("b", RandomFloats(random, Rows), Rows);
        var x = RandomFloats(random, Tokens * Columns);
        var dy = RandomFloats(random, Tokens * Rows);
        float[] y = new float[Tokens * Rows], dx = new float[Tokens * Columns];
        LinearOp.Forward(x, weight, bias, y, Tokens);
        LinearOp.Backward(dy, x, weight, bias, dx, Tokens);

        double[] xd = ToDouble(x), ud = ToDouble(latent), sd = ToDouble(stored.Scales), zd = [.. stored.Zeros.Select(z => (double)z)], bd = ToDouble(bias.Value);
        int K(int i) => stored.GroupIndex[i % Columns] * Rows + i / Columns;
        var inside = new bool[Rows * Columns];
        var residue = new double[Rows * Columns];
        var clamped = new double[Rows * Columns];
        int clampedCount = 0;
        for (int i = 0; i < inside.Length; i++)
        {
            double q = Math.Round(ud[i]) + zd[K(i)];
            inside[i] = q >= 0 && q <= MaxCode;
            residue[i] = Math.Round(ud[i]) - ud[i];
            clamped[i] = Math.Clamp(q, 0, MaxCode);
            clampedCount += inside[i] ? 0 : 1;
        }
        Assert.InRange(clampedCount, 10, Rows * Columns / 2);
        double Straight() => Linear(dy, xd, i => inside[i] ? sd[K(i)] * (ud[i] + residue[i]) : sd[K(i)] * (clamped[i] - zd[K(i)]), bd);

        Report("fake-quant dX", AssertClose(dx, Numeric(xd, Straight), "dX"));
        Report("fake-quant du (latent)", AssertClose(weight.Grad, Numeric(ud, Straight), "du"));
        Report("fake-quant ds", AssertClose(quantization.Scales.Grad, Numeric(sd, Straight), "ds"));
        if (quantization.Zeros is { } zeros) Report("fake-quant dz", AssertClose(zeros.Grad, Numeric(zd, Straight), "dz"));
        for (int i = 0; i < inside.Length; i++)
            if (!inside[i]) Assert.Equal(0f, weight.Grad[i]);

        double True() => Linear(dy, xd, i => sd[K(i)] * (Math.Clamp(Math.Round(ud[i]) + zd[K(i)], 0, MaxCode) - zd[K(i)]), bd);
        Report("ds vs true ds", AssertClose(quantization.Scales.Grad, Numeric(sd, True), "true ds"));
    }

    /// <summary>
    /// Scales only (PEQA): Ŵ = s·(code − z) is linear in s, so the analytic dX and ds are the true derivatives, checked
    /// against differences of that function; the latent weight gets no gradient and the zero points do not train.
    /// </summary>
    [Fact]
    public void Scales_only_gradients_are_the_true_derivatives()
    {
        var random = new Random(13);
        var stored = Stored(random, symmetric: false);
        var quantization = new FakeQuantization("w", stored, QuantizedTraining.Scales);
        Assert.Null(quantization.Zeros);
        Assert.False(quantization.TrainsWeights);
        var weight = new Parameter("w.weight", Latent(random, stored), Rows, Columns);
        weight.Quantize(quantization);
        var x = RandomFloats(random, Tokens * Columns);
        var dy = RandomFloats(random, Tokens * Rows);
        float[] y = new float[Tokens * Rows], dx = new float[Tokens * Columns];
        LinearOp.Forward(x, weight, null, y, Tokens);
        LinearOp.Backward(dy, x, weight, null, dx, Tokens);

        double[] xd = ToDouble(x), sd = ToDouble(stored.Scales), none = new double[Rows];
        double F() => Linear(dy, xd, i =>
        {
            int k = stored.GroupIndex[i % Columns] * Rows + i / Columns;
            return sd[k] * (stored.Codes[i] - stored.Zeros[k]);
        }, none);
        Report("PEQA dX", AssertClose(dx, Numeric(xd, F), "dX"));
        Report("PEQA ds", AssertClose(quantization.Scales.Grad, Numeric(sd, F), "ds"));
        Assert.All(weight.Grad, g => Assert.Equal(0f, g));
    }

    /// <summary>
    /// Re-packing: at the start (<see cref="FakeQuantization.InitialLatent"/>) the forward reproduces the stored layer to the bit and packs to its codes; after the
    /// latent weights, scales (off the float16 grid) and zero points (off the integers, two beyond the grid's ends) have
    /// moved, the packed layer — through the GPTQ v1 tensors and back — dequantizes to exactly the Ŵ the forward computed,
    /// with the stored bits, group count and g_idx.
    /// </summary>
    [Fact]
    public void Repacking_gives_exactly_the_weights_the_forward_used()
    {
        var random = new Random(14);
        var stored = Stored(random, symmetric: false);
        var quantization = new FakeQuantization("w", stored, QuantizedTraining.WeightsAndScales);
        var start = quantization.InitialLatent();
        Assert.Equal(Bits32(stored.Dequantize()), Bits32(quantization.Forward(start)));
        Assert.Equal(stored.Codes, quantization.Pack(start).Codes);

        var latent = Latent(random, stored);
        for (int k = 0; k < Groups * Rows; k++) quantization.Scales.Value[k] *= 1 + 0.01f * (random.NextSingle() - 0.5f);
        for (int k = 0; k < Groups * Rows; k++) quantization.Zeros!.Value[k] += 0.8f * (random.NextSingle() - 0.5f);
        quantization.Zeros!.Value[0] = -0.7f;
        quantization.Zeros.Value[1] = MaxCode + 0.6f;
        var forward = (float[])quantization.Forward(latent).Clone();
        var packed = quantization.Pack(latent);
        var reloaded = GptqPacking.Unpack(GptqPacking.Pack(packed), packed.Scheme);
        Assert.Equal(Bits32(forward), Bits32(reloaded.Dequantize()));
        Assert.Equal((Bits, Groups), (reloaded.Scheme.Bits, reloaded.GroupCount));
        Assert.Equal(stored.GroupIndex, reloaded.GroupIndex);
        Assert.Equal([0, MaxCode], reloaded.Zeros[..2]);
        Assert.True(!packed.Codes.SequenceEqual(stored.Codes), "the moved latent weights packed to the stored codes");
    }

    private static int[] Bits32(float[] values) => [.. values.Select(BitConverter.SingleToInt32Bits)];
}
