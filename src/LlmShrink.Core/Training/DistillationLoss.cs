namespace LlmShrink.Training;

/// <summary>Which divergence between the teacher's token distribution p and the student's q a <see cref="DistillationLoss"/> minimizes.</summary>
public enum Divergence
{
    /// <summary>KL(p‖q) = Σ p (log p − log q): mode-covering, the classic distillation loss (Hinton et al. 2015).</summary>
    ForwardKl,
    /// <summary>KL(q‖p) = Σ q (log q − log p): mode-seeking (MiniLLM, Gu et al. 2024).</summary>
    ReverseKl,
    /// <summary>Generalized Jensen–Shannon divergence with weight β (GKD, Agarwal et al. 2024):
    /// JSD(β) = β KL(p‖m) + (1 − β) KL(q‖m), m = β p + (1 − β) q.</summary>
    Jsd,
}

/// <summary>
/// Token-level distillation loss over N rows of teacher and student logits (GKD, Agarwal et al. 2024): with temperature
/// τ, p = softmax(t/τ) and q = softmax(z/τ) per row, L = (1/N) Σ_rows D(p, q). Gradients with respect to the student
/// logits z (through the softmax, ∂q_j/∂z_i = q_j(δ_ij − q_i)/τ):
/// <list type="bullet">
/// <item>forward KL: ∂D/∂z_i = (q_i − p_i)/τ;</item>
/// <item>reverse KL: ∂D/∂z_i = q_i (log q_i − log p_i − KL(q‖p))/τ;</item>
/// <item>JSD(β): ∂D/∂q_i = (1 − β) log(q_i/m_i) =: g_i (the terms from ∂m/∂q cancel, since Σ_j (β p_j + (1 − β) q_j)/m_j · ∂m_j = 0
/// pointwise), so ∂D/∂z_i = q_i (g_i − Σ_j q_j g_j)/τ.</item>
/// </list>
/// No τ² factor (Hinton et al.'s gradient-scale correction) is applied; a caller that wants it passes it as the weight.
/// JSD needs 0 &lt; β &lt; 1 (at β = 0 or 1 the divergence is identically zero; GKD uses the KLs there).
/// </summary>
public sealed record DistillationLoss(Divergence Kind, float Temperature = 1f, float Beta = 0.5f)
{
    /// <summary>Returns L and adds <paramref name="weight"/>·∂L/∂z into <paramref name="dStudent"/>.</summary>
    public double Forward(ReadOnlySpan<float> teacher, ReadOnlySpan<float> student, Span<float> dStudent, int vocab, float weight = 1)
    {
        if (!(Temperature > 0)) throw new ArgumentOutOfRangeException(nameof(Temperature), "the temperature must be positive");
        if (Kind == Divergence.Jsd && !(Beta > 0 && Beta < 1)) throw new ArgumentOutOfRangeException(nameof(Beta), "JSD's β must lie strictly between 0 and 1");
        if (teacher.Length != student.Length || dStudent.Length != student.Length || student.Length % vocab != 0)
            throw new ArgumentException("teacher logits, student logits and the gradient must all hold N×vocab floats");
        int n = student.Length / vocab;
        double[] logP = new double[vocab], logQ = new double[vocab], g = new double[vocab];
        double total = 0, step = weight / (double)n / Temperature;
        for (int r = 0; r < n; r++)
        {
            LogSoftmax(teacher.Slice(r * vocab, vocab), logP);
            LogSoftmax(student.Slice(r * vocab, vocab), logQ);
            var dz = dStudent.Slice(r * vocab, vocab);
            double d = 0;
            switch (Kind)
            {
                case Divergence.ForwardKl:
                    for (int i = 0; i < vocab; i++)
                    {
                        double p = Math.Exp(logP[i]), q = Math.Exp(logQ[i]);
                        d += p * (logP[i] - logQ[i]);
                        dz[i] += (float)(step * (q - p));
                    }
                    break;
                case Divergence.ReverseKl:
                    for (int i = 0; i < vocab; i++) d += Math.Exp(logQ[i]) * (logQ[i] - logP[i]);
                    for (int i = 0; i < vocab; i++) dz[i] += (float)(step * Math.Exp(logQ[i]) * (logQ[i] - logP[i] - d));
                    break;
                case Divergence.Jsd:
                    double beta = Beta, logBeta = Math.Log(beta), logRest = Math.Log(1 - beta), mean = 0;
                    for (int i = 0; i < vocab; i++)
                    {
                        // log m = log(β p + (1 − β) q), summed in the log domain so that tiny p and q do not underflow.
                        double a = logBeta + logP[i], b = logRest + logQ[i];
                        double logM = Math.Max(a, b) + Math.Log(1 + Math.Exp(-Math.Abs(a - b)));
                        double p = Math.Exp(logP[i]), q = Math.Exp(logQ[i]);
                        d += beta * p * (logP[i] - logM) + (1 - beta) * q * (logQ[i] - logM);
                        g[i] = (1 - beta) * (logQ[i] - logM);
                        mean += q * g[i];
                    }
                    for (int i = 0; i < vocab; i++) dz[i] += (float)(step * Math.Exp(logQ[i]) * (g[i] - mean));
                    break;
            }
            total += d;
        }
        return total / n;
    }

    /// <summary>log softmax(z/τ), in double.</summary>
    private void LogSoftmax(ReadOnlySpan<float> z, double[] result)
    {
        double max = double.NegativeInfinity;
        for (int i = 0; i < z.Length; i++) max = Math.Max(max, z[i] / (double)Temperature);
        double sum = 0;
        for (int i = 0; i < z.Length; i++) sum += Math.Exp(z[i] / (double)Temperature - max);
        double logSum = max + Math.Log(sum);
        for (int i = 0; i < z.Length; i++) result[i] = z[i] / (double)Temperature - logSum;
    }
}
