using LlmShrink.Kernels;
using LlmShrink.Model;
using LlmShrink.Training;
using Xunit;
using Xunit.Abstractions;
using static LlmShrink.Tests.GradientCheck;

namespace LlmShrink.Tests;

/// <summary>
/// Every training op's backward pass against central finite differences of a double-precision reference of the same op.
/// Each check projects the op's output on a random direction dY (f = Σ dY ⊙ op(inputs)), so the analytic gradient is the
/// op's backward applied to dY, and compares it norm-wise (<see cref="GradientCheck.AssertClose"/>, bound 1e-5).
/// </summary>
public class TrainingOpGradientTests(ITestOutputHelper output)
{
    private void Report(string what, double error) => output.WriteLine($"{what}: relative error {error:E2}");

    private static double Project(float[] dy, double[] y)
    {
        double sum = 0;
        for (int i = 0; i < y.Length; i++) sum += dy[i] * y[i];
        return sum;
    }

    [Fact]
    public void Embedding_gradient_adds_every_occurrence_of_a_token()
    {
        var random = new Random(1);
        const int vocab = 5, d = 8;
        int[] tokens = [3, 1, 3];
        var table = new Parameter("e", RandomFloats(random, vocab * d), vocab, d);
        var dy = RandomFloats(random, tokens.Length * d);
        var y = new float[tokens.Length * d];
        EmbeddingOp.Forward(tokens, table, y);
        EmbeddingOp.Backward(tokens, dy, table);

        var t = ToDouble(table.Value);
        double F() => Project(dy, [.. tokens.SelectMany(tok => t.Skip(tok * d).Take(d))]);
        Report("embedding dE", AssertClose(table.Grad, Numeric(t, F), "dE"));
    }

    [Fact]
    public void RmsNorm_gradient_matches_finite_differences()
    {
        var random = new Random(2);
        const int rows = 2, d = 8;
        const float eps = 1e-5f;
        var x = RandomFloats(random, rows * d, 2);
        var w = RandomFloats(random, d).Select(v => 1 + 0.3f * v).ToArray();
        var dy = RandomFloats(random, rows * d);
        float[] y = new float[rows * d], rstd = new float[rows], dx = new float[rows * d], dw = new float[d];
        RmsNormOp.Forward(x, w, y, rstd, rows, eps);
        RmsNormOp.Backward(dy, x, w, rstd, dx, dw, rows);

        double[] xd = ToDouble(x), wd = ToDouble(w);
        double F()
        {
            var result = new double[rows * d];
            for (int r = 0; r < rows; r++)
            {
                double rms = Math.Sqrt(Enumerable.Range(0, d).Sum(j => xd[r * d + j] * xd[r * d + j]) / d + eps);
                for (int j = 0; j < d; j++) result[r * d + j] = xd[r * d + j] / rms * wd[j];
            }
            return Project(dy, result);
        }
        Report("rmsnorm dx", AssertClose(dx, Numeric(xd, F), "dx"));
        Report("rmsnorm dw", AssertClose(dw, Numeric(wd, F), "dw"));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Linear_gradient_matches_finite_differences_and_a_mask_zeroes_its_weight_gradient(bool masked)
    {
        var random = new Random(3);
        const int n = 5, inDim = 20, outDim = 7; // 20 is not a multiple of the kernels' 16-float vectors
        var x = RandomFloats(random, n * inDim);
        var weight = new Parameter("w", RandomFloats(random, outDim * inDim), outDim, inDim);
        var bias = new Parameter("b", RandomFloats(random, outDim), outDim);
        var mask = Enumerable.Range(0, outDim * inDim).Select(_ => (byte)random.Next(2)).ToArray();
        if (masked) weight.SetMask(mask);
        var dy = RandomFloats(random, n * outDim);
        float[] y = new float[n * outDim], dx = new float[n * inDim];
        LinearOp.Forward(x, weight, bias, y, n);
        LinearOp.Backward(dy, x, weight, bias, dx, n);

        double[] xd = ToDouble(x), wd = ToDouble(weight.Value), bd = ToDouble(bias.Value);
        double F()
        {
            var result = new double[n * outDim];
            for (int i = 0; i < n; i++)
                for (int o = 0; o < outDim; o++)
                {
                    double sum = bd[o];
                    for (int k = 0; k < inDim; k++) sum += xd[i * inDim + k] * wd[o * inDim + k] * (masked ? mask[o * inDim + k] : 1);
                    result[i * outDim + o] = sum;
                }
            return Project(dy, result);
        }
        string kind = masked ? "masked linear" : "linear";
        Report($"{kind} dX", AssertClose(dx, Numeric(xd, F), "dX"));
        Report($"{kind} dW", AssertClose(weight.Grad, Numeric(wd, F), "dW"));
        Report($"{kind} db", AssertClose(bias.Grad, Numeric(bd, F), "db"));
        if (masked)
            for (int i = 0; i < mask.Length; i++)
                if (mask[i] == 0) Assert.Equal(0f, weight.Grad[i]);
    }

    public enum AdapterBase { Dense, Masked, Factored }

    /// <summary>
    /// A linear with a low-rank term s·B·A: beside a frozen dense weight (LoRA, two chained linears), inside a masked one
    /// ((W + s·B·A) ⊙ M, the term's gradient routed from the masked weight gradient), or alone (a factored layer). dX, dA,
    /// dB and db match finite differences of W_eff = base + s·B·A; the frozen base receives no gradient at all.
    /// </summary>
    [Theory]
    [InlineData(AdapterBase.Dense)]
    [InlineData(AdapterBase.Masked)]
    [InlineData(AdapterBase.Factored)]
    public void Low_rank_adapter_gradient_matches_finite_differences(AdapterBase kind)
    {
        var random = new Random(9);
        const int n = 5, inDim = 20, outDim = 7, rank = 3;
        const float scale = 2f; // α = 6 at r = 3: a scale other than 1 is part of what is checked
        var x = RandomFloats(random, n * inDim);
        var a = new Parameter("a", RandomFloats(random, rank * inDim), rank, inDim);
        var b = new Parameter("b", RandomFloats(random, outDim * rank), outDim, rank); // nonzero, or dA would be 0
        var adapter = new LowRankAdapter(a, b, scale);
        var mask = Enumerable.Range(0, outDim * inDim).Select(_ => (byte)random.Next(2)).ToArray();
        Parameter weight;
        if (kind == AdapterBase.Factored) weight = Parameter.Factored("w", adapter);
        else
        {
            weight = new Parameter("w", RandomFloats(random, outDim * inDim), outDim, inDim);
            if (kind == AdapterBase.Masked) weight.SetMask(mask);
            weight.Adapt(adapter);
        }
        var bias = new Parameter("bias", RandomFloats(random, outDim), outDim);
        var dy = RandomFloats(random, n * outDim);
        float[] y = new float[n * outDim], dx = new float[n * inDim];
        LinearOp.Forward(x, weight, bias, y, n);
        LinearOp.Backward(dy, x, weight, bias, dx, n);

        double[] xd = ToDouble(x), ad = ToDouble(a.Value), bd = ToDouble(b.Value), wd = ToDouble(weight.Value), biasd = ToDouble(bias.Value);
        double F()
        {
            var result = new double[n * outDim];
            for (int o = 0; o < outDim; o++)
                for (int k = 0; k < inDim; k++)
                {
                    double update = 0;
                    for (int j = 0; j < rank; j++) update += bd[o * rank + j] * ad[j * inDim + k];
                    double w = (kind == AdapterBase.Factored ? 0 : wd[o * inDim + k]) + scale * update;
                    if (kind == AdapterBase.Masked) w *= mask[o * inDim + k];
                    for (int i = 0; i < n; i++) result[i * outDim + o] += xd[i * inDim + k] * w;
                }
            for (int i = 0; i < n; i++)
                for (int o = 0; o < outDim; o++) result[i * outDim + o] += biasd[o];
            return Project(dy, result);
        }
        Assert.Equal(F(), Project(dy, ToDouble(y)), 1e-4);
        Report($"{kind} adapter dX", AssertClose(dx, Numeric(xd, F), "dX"));
        Report($"{kind} adapter dA", AssertClose(a.Grad, Numeric(ad, F), "dA"));
        Report($"{kind} adapter dB", AssertClose(b.Grad, Numeric(bd, F), "dB"));
        Report($"{kind} adapter db", AssertClose(bias.Grad, Numeric(biasd, F), "db"));
        Assert.True(weight.Frozen);
        Assert.All(weight.Grad, g => Assert.Equal(0f, g));
    }

    [Theory]
    [InlineData(RopeStyle.RotateHalf)]
    [InlineData(RopeStyle.Interleaved)]
    public void Rope_gradient_matches_finite_differences(RopeStyle style)
    {
        var random = new Random(4);
        const int batch = 2, seqLen = 3, heads = 2, hd = 8, width = heads * hd, rows = batch * seqLen;
        var rope = new Rope(style, [1.3, 0.6, 0.25, 0.1]);
        var (cos, sin, negativeSin) = RopeOp.Tables(rope, seqLen);
        var x = RandomFloats(random, rows * width);
        var dy = RandomFloats(random, rows * width);
        var dx = (float[])dy.Clone();
        RopeOp.Backward(rope, dx, rows, seqLen, cos, negativeSin);
        var y = (float[])x.Clone();
        RopeOp.Forward(rope, y, rows, seqLen, cos, sin);

        var xd = ToDouble(x);
        double[] Reference()
        {
            var result = (double[])xd.Clone();
            for (int r = 0; r < rows; r++)
                for (int h = 0; h < heads; h++)
                    for (int p = 0; p < hd / 2; p++)
                    {
                        int a = r * width + h * hd + (style == RopeStyle.RotateHalf ? p : 2 * p);
                        int b = r * width + h * hd + (style == RopeStyle.RotateHalf ? p + hd / 2 : 2 * p + 1);
                        double phi = (r % seqLen) * rope.Frequencies[p];
                        result[a] = xd[a] * Math.Cos(phi) - xd[b] * Math.Sin(phi);
                        result[b] = xd[a] * Math.Sin(phi) + xd[b] * Math.Cos(phi);
                    }
            return result;
        }
        var expected = Reference();
        for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], y[i], 1e-6); // the forward too
        Report($"rope {style} dx", AssertClose(dx, Numeric(xd, () => Project(dy, Reference())), "dx"));
    }

    [Theory]
    [InlineData(null)]
    [InlineData(2)]
    public void Gqa_attention_gradient_matches_finite_differences(int? window)
    {
        var random = new Random(5);
        const int batch = 2, seqLen = 3, heads = 4, kvHeads = 2, hd = 8, qDim = heads * hd, kvDim = kvHeads * hd, n = batch * seqLen;
        var attention = new AttentionOp(heads, kvHeads, hd, window);
        float[] q = RandomFloats(random, n * qDim, 1.5f), k = RandomFloats(random, n * kvDim, 1.5f), v = RandomFloats(random, n * kvDim);
        var dy = RandomFloats(random, n * qDim);
        float[] o = new float[n * qDim], probabilities = new float[attention.ProbabilityCount(batch, seqLen)];
        float[] dq = new float[n * qDim], dk = new float[n * kvDim], dv = new float[n * kvDim];
        attention.Forward(q, k, v, o, probabilities, batch, seqLen);
        attention.Backward(dy, q, k, v, probabilities, dq, dk, dv, batch, seqLen);

        double[] qd = ToDouble(q), kd = ToDouble(k), vd = ToDouble(v);
        double F()
        {
            var result = new double[n * qDim];
            for (int b = 0; b < batch; b++)
                for (int h = 0; h < heads; h++)
                {
                    int g = h / (heads / kvHeads);
                    for (int t = 0; t < seqLen; t++)
                    {
                        int first = window is int w ? Math.Max(0, t - w + 1) : 0;
                        var scores = Enumerable.Range(first, t - first + 1).Select(s =>
                            Enumerable.Range(0, hd).Sum(i => qd[(b * seqLen + t) * qDim + h * hd + i] * kd[(b * seqLen + s) * kvDim + g * hd + i]) / Math.Sqrt(hd)).ToArray();
                        double max = scores.Max(), sum = scores.Sum(e => Math.Exp(e - max));
                        for (int s = first; s <= t; s++)
                            for (int i = 0; i < hd; i++)
                                result[(b * seqLen + t) * qDim + h * hd + i] += Math.Exp(scores[s - first] - max) / sum * vd[(b * seqLen + s) * kvDim + g * hd + i];
                    }
                }
            return Project(dy, result);
        }
        string kind = window is null ? "attention" : $"attention window {window}";
        Report($"{kind} dq", AssertClose(dq, Numeric(qd, F), "dq"));
        Report($"{kind} dk", AssertClose(dk, Numeric(kd, F), "dk"));
        Report($"{kind} dv", AssertClose(dv, Numeric(vd, F), "dv"));
    }

    [Fact]
    public void SwiGlu_gradient_matches_finite_differences()
    {
        var random = new Random(6);
        const int count = 19; // two vectors of 8 and a scalar tail
        float[] gate = RandomFloats(random, count, 4), up = RandomFloats(random, count, 2), dy = RandomFloats(random, count);
        float[] y = new float[count], dGate = new float[count], dUp = new float[count];
        SwiGluOp.Forward(gate, up, y);
        SwiGluOp.Backward(dy, gate, up, dGate, dUp);

        double[] gd = ToDouble(gate), ud = ToDouble(up);
        double F() => Project(dy, [.. gd.Select((g, i) => g / (1 + Math.Exp(-g)) * ud[i])]);
        Report("swiglu dgate", AssertClose(dGate, Numeric(gd, F), "dgate"));
        Report("swiglu dup", AssertClose(dUp, Numeric(ud, F), "dup"));
    }

    /// <summary>Mean cross-entropy of double logits [rows, vocab] against targets.</summary>
    private static double ReferenceCrossEntropy(double[] logits, int[] targets, int vocab)
    {
        double loss = 0;
        for (int r = 0; r < targets.Length; r++)
        {
            var row = logits.Skip(r * vocab).Take(vocab).ToArray();
            double max = row.Max();
            loss += max + Math.Log(row.Sum(z => Math.Exp(z - max))) - row[targets[r]];
        }
        return loss / targets.Length;
    }

    [Fact]
    public void CrossEntropy_loss_and_gradient_match_the_reference()
    {
        var random = new Random(7);
        const int vocab = 11;
        int[] targets = [4, 0, 10];
        var logits = RandomFloats(random, targets.Length * vocab, 3);
        var dLogits = new float[logits.Length];
        double loss = CrossEntropy.Forward(logits, targets, dLogits, vocab, weight: 0.5f);

        var zd = ToDouble(logits);
        Assert.Equal(ReferenceCrossEntropy(zd, targets, vocab), loss, 1e-6);
        Report("cross-entropy dz", AssertClose(dLogits, Numeric(zd, () => 0.5 * ReferenceCrossEntropy(zd, targets, vocab)), "dz"));
    }

    [Fact]
    public void LmHead_with_cross_entropy_gradient_matches_finite_differences()
    {
        var random = new Random(8);
        const int d = 8, vocab = 11;
        int[] targets = [2, 9, 2];
        int n = targets.Length;
        var x = RandomFloats(random, n * d, 2);
        var head = new Parameter("lm_head.weight", RandomFloats(random, vocab * d), vocab, d);
        float[] logits = new float[n * vocab], dLogits = new float[n * vocab], dx = new float[n * d];
        LinearOp.Forward(x, head, null, logits, n);
        CrossEntropy.Forward(logits, targets, dLogits, vocab);
        LinearOp.Backward(dLogits, x, head, null, dx, n);

        double[] xd = ToDouble(x), wd = ToDouble(head.Value);
        double F()
        {
            var z = new double[n * vocab];
            for (int i = 0; i < n; i++)
                for (int v = 0; v < vocab; v++)
                    z[i * vocab + v] = Enumerable.Range(0, d).Sum(k => xd[i * d + k] * wd[v * d + k]);
            return ReferenceCrossEntropy(z, targets, vocab);
        }
        Report("lm_head dx", AssertClose(dx, Numeric(xd, F), "dx"));
        Report("lm_head dW", AssertClose(head.Grad, Numeric(wd, F), "dW"));
    }

    /// <summary>The divergences written from their definitions (GKD, Agarwal et al. 2024), in double, averaged over rows.</summary>
    private static double ReferenceDivergence(Divergence kind, double[] teacher, double[] student, int vocab, double temperature, double beta)
    {
        double total = 0;
        int rows = student.Length / vocab;
        for (int r = 0; r < rows; r++)
        {
            double[] Softmax(double[] z)
            {
                var scaled = z.Skip(r * vocab).Take(vocab).Select(v => v / temperature).ToArray();
                double max = scaled.Max(), sum = scaled.Sum(v => Math.Exp(v - max));
                return [.. scaled.Select(v => Math.Exp(v - max) / sum)];
            }
            double Kl(double[] a, double[] b) => a.Select((ai, i) => ai * Math.Log(ai / b[i])).Sum();
            double[] p = Softmax(teacher), q = Softmax(student);
            var m = p.Select((pi, i) => beta * pi + (1 - beta) * q[i]).ToArray();
            total += kind switch
            {
                Divergence.ForwardKl => Kl(p, q),
                Divergence.ReverseKl => Kl(q, p),
                _ => beta * Kl(p, m) + (1 - beta) * Kl(q, m),
            };
        }
        return total / rows;
    }

    [Theory]
    [InlineData(Divergence.ForwardKl, 1.0, 0.5)]
    [InlineData(Divergence.ForwardKl, 2.0, 0.5)]
    [InlineData(Divergence.ReverseKl, 1.0, 0.5)]
    [InlineData(Divergence.ReverseKl, 2.0, 0.5)]
    [InlineData(Divergence.Jsd, 1.0, 0.1)]
    [InlineData(Divergence.Jsd, 1.0, 0.5)]
    [InlineData(Divergence.Jsd, 2.0, 0.9)]
    public void Distillation_loss_and_gradient_match_the_definitions(Divergence kind, double temperature, double beta)
    {
        var random = new Random(9);
        const int rows = 3, vocab = 11;
        float[] teacher = RandomFloats(random, rows * vocab, 4), student = RandomFloats(random, rows * vocab, 4);
        var dStudent = new float[student.Length];
        var lossFunction = new DistillationLoss(kind, (float)temperature, (float)beta);
        double loss = lossFunction.Forward(teacher, student, dStudent, vocab);

        double[] td = ToDouble(teacher), sd = ToDouble(student);
        double tau = (float)temperature, b = (float)beta;
        // float32 rows: log-probabilities of order 10 carry absolute errors of ~1e-6, and so does their p-weighted sum.
        Assert.Equal(ReferenceDivergence(kind, td, sd, vocab, tau, b), loss, 1e-5);
        Assert.True(loss > 0);
        Report($"{kind} τ={temperature} β={beta} dz", AssertClose(dStudent, Numeric(sd, () => ReferenceDivergence(kind, td, sd, vocab, tau, b)), "dz"));
    }

    /// <summary>
    /// Logits 200 apart make exp underflow to exactly zero in float32 for some p and q (and both, for JSD's mixture): the
    /// loss and gradient stay finite, and each row's gradient still sums to zero (adding a constant to z does not change q).
    /// </summary>
    [Theory]
    [InlineData(Divergence.ForwardKl)]
    [InlineData(Divergence.ReverseKl)]
    [InlineData(Divergence.Jsd)]
    public void Distillation_stays_finite_where_probabilities_underflow(Divergence kind)
    {
        const int vocab = 4;
        float[] teacher = [0, -200, 0, -200, 5, 0, -200, -200], student = [0, 0, -200, -200, 0, 5, -200, 1];
        var dStudent = new float[student.Length];
        double loss = new DistillationLoss(kind).Forward(teacher, student, dStudent, vocab);
        Assert.True(double.IsFinite(loss) && loss > 0, $"loss {loss}");
        Assert.All(dStudent, g => Assert.True(float.IsFinite(g)));
        for (int r = 0; r < 2; r++) Assert.Equal(0, dStudent.AsSpan(r * vocab, vocab).ToArray().Sum(), 1e-6);
    }
}
