namespace LlmShrink.Training;

/// <summary>Hyper-parameters of <see cref="Distillation"/>. The defaults are fine-tuning ones: a pretrained student, a small rate, no decay.</summary>
public sealed record DistillationOptions
{
    public required int Steps { get; init; }
    /// <summary>Sequences per step.</summary>
    public int Batch { get; init; } = 8;
    /// <summary>Tokens per sequence (BOS first); the loss covers the teacher's and student's distributions at every position.</summary>
    public int SeqLen { get; init; } = 128;
    public float Lr { get; init; } = 1e-4f;
    /// <summary>
    /// Peak rate of fake-quantized latent weights, which are in steps of their grid (<see cref="FakeQuantization"/>), on
    /// the same schedule: <see cref="DistillationStudent.Load"/> gives them <see cref="Parameter.RateScale"/> = LatentLr / Lr.
    /// </summary>
    public float LatentLr { get; init; } = 1e-2f;
    /// <summary>Warmup steps; the rate then follows a cosine down to Lr / 10 at the last step.</summary>
    public int Warmup { get; init; } = 10;
    /// <summary>AdamW's decoupled decay: 0, so the student is pulled toward the teacher only, not toward zero.</summary>
    public float WeightDecay { get; init; }
    public double ClipNorm { get; init; } = 1.0;
    public DistillationLoss Loss { get; init; } = new(Divergence.ForwardKl);
    /// <summary>Weight of the final-hidden-state MSE added to the loss (<see cref="HiddenStateMse"/>); 0 = none.</summary>
    public float HiddenMse { get; init; }

    public void Validate()
    {
        if (Steps <= 0) throw new ShrinkException($"--steps: must be positive, not {Steps}");
        if (Batch <= 0) throw new ShrinkException($"--batch: must be positive, not {Batch}");
        if (SeqLen < 2) throw new ShrinkException($"--seq-len: must be at least 2, not {SeqLen}");
        if (!(Lr > 0)) throw new ShrinkException($"--lr: must be positive, not {Lr}");
        if (!(LatentLr >= 0) || !float.IsFinite(LatentLr)) throw new ShrinkException($"--latent-lr: must be 0 or positive, not {LatentLr}");
        if (Warmup < 0) throw new ShrinkException($"--warmup: must not be negative, not {Warmup}");
        if (!(Loss.Temperature > 0) || !float.IsFinite(Loss.Temperature)) throw new ShrinkException($"--temperature: must be positive, not {Loss.Temperature}");
        if (!(HiddenMse >= 0) || !float.IsFinite(HiddenMse)) throw new ShrinkException($"--hidden-mse: must be 0 or positive, not {HiddenMse}");
        if (Loss.Kind == Divergence.Jsd && !(Loss.Beta > 0 && Loss.Beta < 1)) throw new ShrinkException($"--beta: JSD needs 0 < β < 1, not {Loss.Beta}");
    }
}

/// <summary>
/// White-box knowledge distillation of a <see cref="TrainableModel"/> student from a teacher's logits (GKD, Agarwal et
/// al. 2024, on a fixed dataset — their "supervised KD" setting, Eq. 2 with the divergence D chosen): each step takes a
/// batch of token sequences, computes the teacher's logits and the student's on the same tokens, L = mean over positions
/// of D(softmax(t/τ), softmax(z/τ)) (<see cref="DistillationLoss"/>), backward, clips the global gradient norm, and takes
/// an AdamW step at the warmup + cosine rate. The gradient is scaled by τ² (Hinton et al. 2015, §2: the soft targets'
/// gradients shrink as 1/τ², so their scale stays comparable across temperatures); the reported loss is L itself.
/// With <see cref="DistillationOptions.HiddenMse"/> = w > 0 the loss is L + w·MSE(final hidden states) (<see cref="HiddenStateMse"/>).
/// Masked (pruned) parameters keep their zeros (<see cref="Parameter.Mask"/>); fake-quantized ones train their latent
/// weights and grids, or their grids alone (<see cref="TrainableModel.Trainable"/>).
/// </summary>
public static class Distillation
{
    /// <summary>
    /// Trains <paramref name="student"/> in place on <paramref name="batchAt"/>(step) ([batch, seqLen] tokens);
    /// <paramref name="onStep"/>(step, loss, learning rate) after every step. Returns each step's loss.
    /// </summary>
    public static List<double> Run(TrainableModel student, TeacherLogits teacher, Func<int, int[]> batchAt, DistillationOptions options,
        Action<int, double, float>? onStep = null, CancellationToken cancellation = default)
    {
        options.Validate();
        int batch = options.Batch, seqLen = options.SeqLen, vocab = student.Config.VocabSize;
        if (teacher.Config.VocabSize != vocab) throw new ShrinkException($"the teacher's vocabulary ({teacher.Config.VocabSize}) differs from the student's ({vocab})");
        int hiddenSize = student.Config.HiddenSize;
        if (options.HiddenMse > 0 && teacher.Config.HiddenSize != hiddenSize)
            throw new ShrinkException($"--hidden-mse: the teacher's hidden size ({teacher.Config.HiddenSize}) differs from the student's ({hiddenSize})");
        var teacherHidden = options.HiddenMse > 0 ? new float[batch * seqLen * hiddenSize] : null;
        var dHidden = new float[teacherHidden?.Length ?? 0];
        var optimizer = new AdamW(weightDecay: options.WeightDecay);
        var schedule = new LearningRateSchedule(options.Lr, options.Lr / 10, Math.Min(options.Warmup, options.Steps - 1), options.Steps);
        var teacherLogits = new float[batch * seqLen * vocab];
        var dLogits = new float[batch * seqLen * vocab];
        float tau = options.Loss.Temperature;
        var losses = new List<double>();
        var trainable = student.Trainable;
        for (int step = 0; step < options.Steps; step++)
        {
            cancellation.ThrowIfCancellationRequested();
            var tokens = batchAt(step);
            teacher.Compute(tokens, batch, seqLen, teacherLogits, teacherHidden);
            student.ZeroGrad();
            var logits = student.Forward(tokens, batch, seqLen);
            Array.Clear(dLogits);
            double loss = options.Loss.Forward(teacherLogits, logits, dLogits, vocab, weight: tau * tau);
            if (teacherHidden is not null)
            {
                Array.Clear(dHidden);
                loss += options.HiddenMse * HiddenStateMse.Forward(teacherHidden, student.FinalHidden, dHidden, options.HiddenMse);
            }
            student.Backward(dLogits, dHidden);
            GradientClipping.ClipGlobalNorm(trainable, options.ClipNorm);
            float lr = schedule.At(step);
            optimizer.Update(trainable, lr);
            losses.Add(loss);
            onStep?.Invoke(step, loss, lr);
        }
        return losses;
    }
}
