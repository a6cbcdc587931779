using LlmShrink.Compression;

namespace LlmShrink.Training;

/// <summary>Hyper-parameters of <see cref="Pretraining"/>; the defaults are small-model ones (nanoGPT's Shakespeare-char scale).</summary>
public sealed record PretrainingOptions
{
    public required int Steps { get; init; }
    /// <summary>Sequences per step.</summary>
    public int Batch { get; init; } = 8;
    /// <summary>Tokens per sequence (BOS and SeqLen − 1 tokens of text; the targets are the next SeqLen tokens).</summary>
    public int SeqLen { get; init; } = 128;
    public float Lr { get; init; } = 1e-3f;
    /// <summary>Warmup steps; the rate then follows a cosine down to Lr / 10 at the last step.</summary>
    public int Warmup { get; init; } = 10;
    public float WeightDecay { get; init; } = 0.1f;
    public double ClipNorm { get; init; } = 1.0;
    public int Seed { get; init; }
    public bool Recompute { get; init; }

    public void Validate()
    {
        if (Steps <= 0) throw new ShrinkException($"--steps: must be positive, not {Steps}");
        if (Batch <= 0) throw new ShrinkException($"--batch: must be positive, not {Batch}");
        if (SeqLen < 2) throw new ShrinkException($"--seq-len: must be at least 2, not {SeqLen}");
        if (!(Lr > 0)) throw new ShrinkException($"--lr: must be positive, not {Lr}");
        if (Warmup < 0) throw new ShrinkException($"--warmup: must not be negative, not {Warmup}");
    }
}

/// <summary>
/// Next-token training of a <see cref="TrainableModel"/> on a token stream, as llm.c's train loop: each step draws
/// <c>batch</c> windows at seeded random positions (<see cref="CalibrationSet.FromTokens"/>: BOS, then seqLen tokens of
/// text), runs forward, cross-entropy of each position against the next token, backward, clips the global gradient
/// norm, and takes an AdamW step at the warmup + cosine learning rate.
/// </summary>
public static class Pretraining
{
    /// <summary>Trains in place; <paramref name="onStep"/>(step, loss, learning rate) after every step. Returns each step's loss.</summary>
    public static List<double> Run(TrainableModel model, int[] tokens, int bosId, PretrainingOptions options,
        Action<int, double, float>? onStep = null, CancellationToken cancellation = default)
    {
        options.Validate();
        int batch = options.Batch, seqLen = options.SeqLen, vocab = model.Config.VocabSize;
        if (tokens.Length < seqLen) throw new ShrinkException($"the training text has {tokens.Length} tokens, fewer than one sequence of {seqLen} + 1");
        model.Recompute = options.Recompute;
        var optimizer = new AdamW(weightDecay: options.WeightDecay);
        var schedule = new LearningRateSchedule(options.Lr, options.Lr / 10, Math.Min(options.Warmup, options.Steps - 1), options.Steps);
        var inputs = new int[batch * seqLen];
        var targets = new int[batch * seqLen];
        var dLogits = new float[batch * seqLen * vocab];
        var losses = new List<double>();
        for (int step = 0; step < options.Steps; step++)
        {
            cancellation.ThrowIfCancellationRequested();
            // Windows of seqLen + 1: the model reads the first seqLen, and predicts the last seqLen.
            var windows = CalibrationSet.FromTokens(tokens, bosId, batch, seqLen + 1, unchecked(options.Seed * 1_000_003 + step), "the training text");
            for (int b = 0; b < batch; b++)
            {
                windows.Samples[b].AsSpan(0, seqLen).CopyTo(inputs.AsSpan(b * seqLen));
                windows.Samples[b].AsSpan(1, seqLen).CopyTo(targets.AsSpan(b * seqLen));
            }
            model.ZeroGrad();
            var logits = model.Forward(inputs, batch, seqLen);
            Array.Clear(dLogits);
            double loss = CrossEntropy.Forward(logits, targets, dLogits, vocab);
            model.Backward(dLogits);
            GradientClipping.ClipGlobalNorm(model.Parameters, options.ClipNorm);
            float lr = schedule.At(step);
            optimizer.Update(model.Parameters, lr);
            losses.Add(loss);
            onStep?.Invoke(step, loss, lr);
        }
        return losses;
    }
}
