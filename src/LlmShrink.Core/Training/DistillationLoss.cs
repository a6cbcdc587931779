using System.Numerics.Tensors;

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
/// <para>Rows run in parallel, each in float32 with vectorized <see cref="TensorPrimitives"/> over the vocabulary (the
/// row's sums are float dot products, the total is summed in double in row order, so results do not depend on threads).</para>
/// </summary>
public sealed record DistillationLoss(Divergence Kind, float Temperature = 1f, float Beta = 0.5f)
{
    /// <summary>Returns L and adds <paramref name="weight"/>·∂L/∂z into <paramref name="dStudent"/>.</summary>
    public double Forward(float[] teacher, float[] student, float[] dStudent, int vocab, float weight = 1)
    {
        if (!(Temperature > 0)) throw new ArgumentOutOfRangeException(nameof(Temperature), "the temperature must be positive");
        if (Kind == Divergence.Jsd && !(Beta > 0 && Beta < 1)) throw new ArgumentOutOfRangeException(nameof(Beta), "JSD's β must lie strictly between 0 and 1");
        if (teacher.Length != student.Length || dStudent.Length != student.Length || student.Length % vocab != 0)
            throw new ArgumentException("teacher logits, student logits and the gradient must all hold N×vocab floats");
        int n = student.Length / vocab;
        var rowLoss = new double[n];
        float step = weight / n / Temperature;
        Parallel.For(0, n, () => new Row(vocab), (r, _, row) =>
        {
            rowLoss[r] = row.Run(this, teacher.AsSpan(r * vocab, vocab), student.AsSpan(r * vocab, vocab), dStudent.AsSpan(r * vocab, vocab), step);
            return row;
        }, _ => { });
        double total = 0;
        foreach (double d in rowLoss) total += d;
        return total / n;
    }

    private const float SmallestNormal = 1.17549435e-38f;

    /// <summary>One thread's buffers: log p, log q, p, q and scratch over the vocabulary.</summary>
    private sealed class Row(int vocab)
    {
        private readonly float[] _logP = new float[vocab], _logQ = new float[vocab], _p = new float[vocab], _q = new float[vocab], _a = new float[vocab], _b = new float[vocab];

        /// <summary>D(p, q) of one row; adds step·∂D/∂z·τ into dz.</summary>
        public double Run(DistillationLoss loss, ReadOnlySpan<float> teacher, ReadOnlySpan<float> student, Span<float> dz, float step)
        {
            LogSoftmax(teacher, loss.Temperature, _logP, _p);
            LogSoftmax(student, loss.Temperature, _logQ, _q);
            Span<float> a = _a, b = _b;
            switch (loss.Kind)
            {
                case Divergence.ForwardKl:
                {
                    TensorPrimitives.Subtract(_logP, _logQ, a);
                    float d = TensorPrimitives.Dot(_p, a);
                    TensorPrimitives.Subtract(_q, _p, a);
                    TensorPrimitives.MultiplyAdd(a, step, dz, dz);
                    return d;
                }
                case Divergence.ReverseKl:
                {
                    TensorPrimitives.Subtract(_logQ, _logP, a);
                    float d = TensorPrimitives.Dot(_q, a);
                    TensorPrimitives.Subtract(a, d, a);
                    TensorPrimitives.Multiply(a, _q, a);
                    TensorPrimitives.MultiplyAdd(a, step, dz, dz);
                    return d;
                }
                default:
                {
                    float beta = loss.Beta;
                    // log m = log(β p + (1 − β) q); m is kept above the smallest normal float, so that where p and q
                    // both underflow, log m stays finite and the terms weighted by p or q stay zero.
                    TensorPrimitives.Multiply(_p, beta, b);
                    TensorPrimitives.MultiplyAdd(_q, 1 - beta, b, b);
                    TensorPrimitives.Max(b, SmallestNormal, b);
                    TensorPrimitives.Log(b, b);
                    TensorPrimitives.Subtract(_logP, b, a);
                    double d = beta * (double)TensorPrimitives.Dot(_p, a);
                    TensorPrimitives.Subtract(_logQ, b, a);                     // log q − log m
                    d += (1 - beta) * (double)TensorPrimitives.Dot(_q, a);
                    TensorPrimitives.Multiply(a, 1 - beta, a);                  // g = (1 − β)(log q − log m)
                    float mean = TensorPrimitives.Dot(_q, a);
                    TensorPrimitives.Subtract(a, mean, a);
                    TensorPrimitives.Multiply(a, _q, a);
                    TensorPrimitives.MultiplyAdd(a, step, dz, dz);
                    return d;
                }
            }
        }

        /// <summary>log softmax(z/τ) into <paramref name="logs"/> and softmax(z/τ) into <paramref name="probabilities"/>.</summary>
        private static void LogSoftmax(ReadOnlySpan<float> z, float temperature, Span<float> logs, Span<float> probabilities)
        {
            TensorPrimitives.Multiply(z, 1 / temperature, logs);
            TensorPrimitives.Subtract(logs, TensorPrimitives.Max(logs), logs);
            TensorPrimitives.Exp(logs, probabilities);
            float sum = TensorPrimitives.Sum(probabilities);
            TensorPrimitives.Subtract(logs, MathF.Log(sum), logs);
            TensorPrimitives.Multiply(probabilities, 1 / sum, probabilities);
        }
    }
}
