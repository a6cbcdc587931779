using LlmShrink.Training;
using Xunit;
using Xunit.Abstractions;
using static LlmShrink.Tests.GradientCheck;

namespace LlmShrink.Tests;

/// <summary>
/// <see cref="AttentionOp"/>'s tiled forward and backward against a plain scalar attention in double precision, on
/// shapes that exercise every edge of the tiling: T not a multiple of 4 or 16 (partial row blocks, key ranges cut at T),
/// sliding windows shorter and longer than a 16-key chunk, head dims that are and are not multiples of 16, GQA groups
/// of 1 and 4, and a batch of 2 (the last sequence's last rows border the end of the arrays).
/// </summary>
public class AttentionOpTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(13, null, 32, 1)]
    [InlineData(13, 5, 32, 4)]
    [InlineData(37, null, 64, 4)]
    [InlineData(37, 5, 64, 1)]
    [InlineData(37, 20, 32, 4)]
    [InlineData(50, 17, 64, 4)]
    [InlineData(19, null, 8, 2)]
    [InlineData(21, 6, 24, 1)]
    public void Tiled_attention_matches_the_scalar_reference(int seqLen, int? window, int hd, int group)
    {
        var random = new Random(seqLen * 1000 + hd + group);
        const int batch = 2, kvHeads = 2;
        int heads = kvHeads * group, qDim = heads * hd, kvDim = kvHeads * hd, n = batch * seqLen;
        var attention = new AttentionOp(heads, kvHeads, hd, window);
        float[] q = RandomFloats(random, n * qDim, 1.5f), k = RandomFloats(random, n * kvDim, 1.5f), v = RandomFloats(random, n * kvDim);
        var dOutput = RandomFloats(random, n * qDim);
        float[] o = new float[n * qDim], probabilities = new float[attention.ProbabilityCount(batch, seqLen)];
        // The gradients are added: start them from non-zero values.
        float[] dq0 = RandomFloats(random, n * qDim), dk0 = RandomFloats(random, n * kvDim), dv0 = RandomFloats(random, n * kvDim);
        float[] dq = [.. dq0], dk = [.. dk0], dv = [.. dv0];
        attention.Forward(q, k, v, o, probabilities, batch, seqLen);
        attention.Backward(dOutput, q, k, v, probabilities, dq, dk, dv, batch, seqLen);

        var r = Reference(q, k, v, dOutput, batch, seqLen, heads, kvHeads, hd, window);
        for (int i = 0; i < dq.Length; i++) dq[i] -= dq0[i];
        for (int i = 0; i < dk.Length; i++) { dk[i] -= dk0[i]; dv[i] -= dv0[i]; }
        string shape = $"T {seqLen}, window {window?.ToString() ?? "none"}, d {hd}, group {group}";
        foreach (var (name, actual, expected) in new[] { ("o", o, r.O), ("dq", dq, r.Dq), ("dk", dk, r.Dk), ("dv", dv, r.Dv) })
        {
            double error = RelativeError(actual, expected);
            output.WriteLine($"{shape}: {name} relative error {error:E2}");
            Assert.True(error < 1e-5, $"{shape}: {name} relative error {error:E2}");
        }
        // P inside each window; outside it the op leaves whatever it likes.
        var p = new List<float>();
        var pExpected = new List<double>();
        for (int bh = 0; bh < batch * heads; bh++)
            for (int t = 0; t < seqLen; t++)
                for (int s = First(t, window); s <= t; s++)
                {
                    p.Add(probabilities[((long)bh * seqLen + t) * seqLen + s]);
                    pExpected.Add(r.P[((long)bh * seqLen + t) * seqLen + s]);
                }
        Assert.True(RelativeError(p.ToArray(), [.. pExpected]) < 1e-5, $"{shape}: P");
    }

    [Theory]
    [InlineData(4, 64, 1, false)]
    [InlineData(3, 48, 33, true)]
    [InlineData(1, 16, 7, true)]
    [InlineData(2, 32, 19, false)]
    public unsafe void Tiles_match_their_scalar_reference(int rows, int width, int count, bool add)
    {
        var random = new Random(rows * 100 + width + count);
        // A read transposed (aRow 1, aStep 9), as dK = dSᵀ·Q reads dS; C with a row stride wider than the tile.
        const int aStep = 9, cRow = 80;
        float[] a = RandomFloats(random, count * aStep + 4), b = RandomFloats(random, count * width), c = RandomFloats(random, 4 * cRow);
        float[] expected = [.. c];
        fixed (float* pa = a, pb = b, pc = c, pe = expected)
        {
            AttentionTiles.Multiply(pa, 1, aStep, rows, pb, width, count, pc, cRow, width, add);
            AttentionTiles.Reference(pa, 1, aStep, rows, pb, width, count, pe, cRow, width, add);
        }
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < width; j++)
                Assert.Equal(expected[r * cRow + j], c[r * cRow + j], 1e-5f);
        for (int j = width; j < cRow; j++) Assert.Equal(expected[j], c[j]); // nothing past the tile's width
    }

    private static int First(int t, int? window) => window is int w ? Math.Max(0, t - w + 1) : 0;

    private sealed record Result(double[] O, double[] P, double[] Dq, double[] Dk, double[] Dv);

    /// <summary>Attention and its gradients written out element by element, in double, straight from the formulas in <see cref="AttentionOp"/>'s summary.</summary>
    private static Result Reference(float[] q, float[] k, float[] v, float[] dOutput, int batch, int seqLen, int heads, int kvHeads, int hd, int? window)
    {
        int qDim = heads * hd, kvDim = kvHeads * hd, n = batch * seqLen;
        double scale = 1 / Math.Sqrt(hd);
        double[] o = new double[n * qDim], p = new double[batch * heads * seqLen * seqLen];
        double[] dq = new double[n * qDim], dk = new double[n * kvDim], dv = new double[n * kvDim];
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < heads; h++)
            {
                int g = h / (heads / kvHeads);
                double Q(int t, int i) => q[(b * seqLen + t) * qDim + h * hd + i];
                double K(int s, int i) => k[(b * seqLen + s) * kvDim + g * hd + i];
                double V(int s, int i) => v[(b * seqLen + s) * kvDim + g * hd + i];
                double DO(int t, int i) => dOutput[(b * seqLen + t) * qDim + h * hd + i];
                for (int t = 0; t < seqLen; t++)
                {
                    int first = First(t, window);
                    long row = ((long)(b * heads + h) * seqLen + t) * seqLen;
                    var scores = new double[t + 1];
                    double max = double.NegativeInfinity, sum = 0;
                    for (int s = first; s <= t; s++)
                    {
                        for (int i = 0; i < hd; i++) scores[s] += Q(t, i) * K(s, i) * scale;
                        max = Math.Max(max, scores[s]);
                    }
                    for (int s = first; s <= t; s++) sum += Math.Exp(scores[s] - max);
                    for (int s = first; s <= t; s++) p[row + s] = Math.Exp(scores[s] - max) / sum;
                    for (int s = first; s <= t; s++)
                        for (int i = 0; i < hd; i++) o[(b * seqLen + t) * qDim + h * hd + i] += p[row + s] * V(s, i);
                    var dP = new double[t + 1];
                    double weighted = 0;
                    for (int s = first; s <= t; s++)
                    {
                        for (int i = 0; i < hd; i++) dP[s] += DO(t, i) * V(s, i);
                        weighted += p[row + s] * dP[s];
                    }
                    for (int s = first; s <= t; s++)
                    {
                        double dS = p[row + s] * (dP[s] - weighted) * scale;
                        for (int i = 0; i < hd; i++)
                        {
                            dq[(b * seqLen + t) * qDim + h * hd + i] += dS * K(s, i);
                            dk[(b * seqLen + s) * kvDim + g * hd + i] += dS * Q(t, i);
                            dv[(b * seqLen + s) * kvDim + g * hd + i] += p[row + s] * DO(t, i);
                        }
                    }
                }
            }
        return new Result(o, p, dq, dk, dv);
    }
}
