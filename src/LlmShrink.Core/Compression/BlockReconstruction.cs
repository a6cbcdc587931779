using LlmShrink.Compression.Quantization;
using LlmShrink.Training;

namespace LlmShrink.Compression;

/// <summary>AutoRound's optimization settings.</summary>
/// <param name="Steps">Sign-gradient steps per block (AutoRound's default, 200).</param>
/// <param name="Batch">Calibration samples per step (AutoRound's default, 8).</param>
/// <param name="LearningRate">The first step's size, decayed linearly to 0 over the steps; AutoRound's default is 1/steps.</param>
/// <param name="Seed">Seeds the order in which the samples are batched.</param>
public sealed record AutoRoundOptions(int Steps = 200, int Batch = 8, double LearningRate = 1.0 / 200, int Seed = 0);

/// <summary>The block output's mean squared error against its targets over all calibration samples, before and after the optimization.</summary>
/// <param name="Kept">False when the optimized rounding was no better than where it started (round-to-nearest), which was kept instead.</param>
public sealed record BlockReconstructionResult(double InitialMse, double FinalMse, bool Kept);

/// <summary>
/// Block-wise reconstruction (AutoRound, Cheng et al. 2023, §3; BRECQ's block granularity): the block's quantized
/// linears are replaced by their fake-quantized weights Ŵ(V, α, β) (<see cref="LearnedRounding"/>), and V, α, β minimize
/// ‖block(X; Ŵ) − Y‖² / (N·d) over the calibration inputs X and targets Y by signed gradient descent, on batches of samples
/// in a seeded shuffled order, with the step size decayed linearly to 0. ∂L/∂Ŵ comes from the training engine's explicit
/// backward through the one block (<see cref="TrainableModel.BackwardBlocks"/>). The MSE over every sample is measured
/// before and after; the method never ends worse on its own objective than where it started (round-to-nearest).
/// </summary>
public static class BlockReconstruction
{
    /// <param name="block">A one-block trainable model whose <paramref name="layers"/>' weights it overwrites with Ŵ each step.</param>
    /// <param name="inputs">The block's calibration inputs, one array of seqLen × hidden per sample.</param>
    /// <param name="targets">The outputs the block should give on them, shaped alike.</param>
    /// <param name="progress">Told the fraction of the steps done.</param>
    public static BlockReconstructionResult Run(TrainableModel block, IReadOnlyList<(Parameter Weight, LearnedRounding Rounding)> layers,
        IReadOnlyList<float[]> inputs, IReadOnlyList<float[]> targets, int seqLen, AutoRoundOptions options,
        Action<double>? progress = null, CancellationToken cancel = default)
    {
        if (inputs.Count == 0 || inputs.Count != targets.Count) throw new ArgumentException("block reconstruction needs as many targets as inputs, at least one");
        int batch = Math.Min(options.Batch, inputs.Count), width = inputs[0].Length;
        var x = new float[batch * width];
        var y = new float[batch * width];
        var dOutput = new float[batch * width];
        var order = Enumerable.Range(0, inputs.Count).ToArray();
        var random = new Random(options.Seed);
        int next = order.Length;

        double initial = Mse(block, layers, inputs, targets, seqLen, batch);
        for (int step = 0; step < options.Steps; step++)
        {
            cancel.ThrowIfCancellationRequested();
            for (int b = 0; b < batch; b++)
            {
                if (next == order.Length) { random.Shuffle(order); next = 0; }
                inputs[order[next]].CopyTo(x, b * width);
                targets[order[next++]].CopyTo(y, b * width);
            }
            foreach (var (weight, rounding) in layers) rounding.FakeQuantize(weight.Value);
            block.ZeroGrad();
            var output = block.ForwardBlocks(x, batch, seqLen);
            for (int i = 0; i < dOutput.Length; i++) dOutput[i] = 2 * (output[i] - y[i]) / dOutput.Length;
            block.BackwardBlocks(dOutput);
            float lr = (float)(options.LearningRate * (1 - (double)step / options.Steps));
            foreach (var (weight, rounding) in layers)
            {
                rounding.ZeroGrad();
                rounding.Backward(weight.Grad);
                rounding.SignStep(lr, lr);
            }
            progress?.Invoke((step + 1.0) / options.Steps);
        }
        double final = Mse(block, layers, inputs, targets, seqLen, batch);
        if (final < initial) return new BlockReconstructionResult(initial, final, true);
        foreach (var (_, rounding) in layers) rounding.Reset();
        return new BlockReconstructionResult(initial, final, false);
    }

    /// <summary>‖block(X; Ŵ) − Y‖² / (N·d) over every sample, for the current V, α, β.</summary>
    public static double Mse(TrainableModel block, IReadOnlyList<(Parameter Weight, LearnedRounding Rounding)> layers,
        IReadOnlyList<float[]> inputs, IReadOnlyList<float[]> targets, int seqLen, int batch)
    {
        foreach (var (weight, rounding) in layers) rounding.FakeQuantize(weight.Value);
        int width = inputs[0].Length;
        var x = new float[batch * width];
        double sum = 0;
        for (int start = 0; start < inputs.Count; start += batch)
        {
            int count = Math.Min(batch, inputs.Count - start);
            for (int b = 0; b < count; b++) inputs[start + b].CopyTo(x, b * width);
            var output = block.ForwardBlocks(x.AsSpan(0, count * width), count, seqLen);
            for (int b = 0; b < count; b++)
            {
                var target = targets[start + b];
                for (int i = 0; i < width; i++)
                {
                    double d = output[b * width + i] - target[i];
                    sum += d * d;
                }
            }
        }
        return sum / ((double)inputs.Count * width);
    }
}
