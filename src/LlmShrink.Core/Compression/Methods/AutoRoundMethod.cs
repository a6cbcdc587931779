using LlmShrink.Compression.Quantization;
using LlmShrink.Compression.Recipes;
using LlmShrink.Model;
using LlmShrink.Training;

namespace LlmShrink.Compression.Methods;

/// <summary>
/// AutoRound (Cheng et al. 2023, "Optimize Weight Rounding via Signed Gradient Descent for the Quantization of LLMs"):
/// for each block, a rounding offset per weight and a clipping factor pair per group of every targeted layer are tuned
/// by signed gradient descent so that the block with its fake-quantized layers reproduces the uncompressed block's
/// outputs on the calibration inputs (<see cref="BlockReconstruction"/>); then the layers are stored with those roundings
/// as ordinary GPTQ-packed layers. The inputs are the outputs of the blocks before it as compressed (AutoRound's
/// <c>enable_quanted_input</c>). The targets are, with <c>reference: model</c> (AutoRound's choice), the uncompressed
/// model's own hidden states after the block, so each block also learns to undo the error the blocks before it hand it;
/// with <c>reference: block</c>, the uncompressed block's outputs on the same inputs (GPTQ's view: each block on its own).
/// Keys: the scheme's (<c>bits</c>, <c>group_size</c>, <c>granularity</c> group | channel, <c>symmetric</c>), and
/// <c>steps</c> (default 200), <c>batch</c> (samples per step, default 8), <c>lr</c> (default 1/steps), <c>seed</c>,
/// <c>reference</c> (model | block).
/// </summary>
public sealed class AutoRoundMethod(QuantScheme scheme, AutoRoundOptions options, bool referenceTargets) : ICompressionMethod
{
    public string Name => "autoround";
    public StatisticsNeeds Needs => referenceTargets ? StatisticsNeeds.ReferenceOutputs : StatisticsNeeds.BlockOutputs;
    /// <summary>lm_head belongs to no block whose output could be reconstructed.</summary>
    public bool CanTargetLmHead => false;

    public static ICompressionMethod FromRecipe(RecipeParameters p)
    {
        var scheme = SchemeParameters.Read(p);
        if (scheme.Granularity == QuantGranularity.PerTensor)
            throw ShrinkException.InFile(p.Source, "modifier 'autoround': granularity: tensor has no per-group clipping to learn; use group or channel");
        int steps = p.Int("steps", 200), batch = p.Int("batch", 8), seed = p.Int("seed", 0);
        if (steps < 1 || batch < 1) throw ShrinkException.InFile(p.Source, "modifier 'autoround': steps and batch must be positive");
        double lr = p.Double("lr", 1.0 / steps, 1e-6, 1);
        bool reference = p.String("reference", "model", "model", "block") == "model";
        return new AutoRoundMethod(scheme, new AutoRoundOptions(steps, batch, lr, seed), reference);
    }

    public void CompressBlock(BlockCompression block)
    {
        if (block.Block is not { } decoder) throw new ShrinkException($"{Name} cannot target lm_head");
        if (block.BlockInputs.Count == 0) throw new InvalidOperationException($"{Name} needs the block's calibration inputs and outputs");
        var shape = block.BlockShape;
        var config = block.Config.WithLayerShapes([shape]) with { VocabSize = 1, TiedEmbeddings = true };
        var targets = block.Targets.ToHashSet();
        var roundings = new Dictionary<LinearRole, LearnedRounding>();
        foreach (var role in block.Targets)
        {
            var (rows, columns) = block.Shape(role);
            roundings[role] = new LearnedRounding(block.Weights(role), rows, columns, scheme);
        }
        var trainable = TrainableModel.Create(config, (name, size) => Values(block, decoder, targets, name, size), block.RopeFrequencyFactors());
        var layers = block.Targets.Select(role => (Parameter(trainable.Blocks[0], role), roundings[role])).ToList();
        int seqLen = block.BlockInputs[0].Length / config.HiddenSize;
        BlockReconstruction.Run(trainable, layers, block.BlockInputs, referenceTargets ? block.ReferenceOutputs : block.BlockOutputs, seqLen, options, block.ReportProgress, block.Cancellation);
        foreach (var role in block.Targets) block.SetQuantized(role, roundings[role].Quantize());
    }

    /// <summary>
    /// The one-block model's tensors: the block's norms and biases as they are, the targeted layers' weights as buffers
    /// for Ŵ, the other layers' current float weights (a layer another modifier already quantized and this one does not
    /// target is refused: its float weights are gone). The embedding and final norm of the one-token vocabulary are never used.
    /// </summary>
    private float[] Values(BlockCompression block, TransformerBlock decoder, HashSet<LinearRole> targets, string name, int[] shape)
    {
        int size = shape.Aggregate(1, (a, b) => a * b);
        foreach (var role in LinearRoles.All.Where(r => r != LinearRole.LmHead))
        {
            if (name == TensorNames.Layer(0, LinearRoles.WeightSuffix(role)))
            {
                if (targets.Contains(role)) return new float[size];
                if (block.IsCompressed(role))
                    throw new ShrinkException($"recipe conflict: {Name} reconstructs block {block.Layer} as a whole, and its {LinearRoles.ModuleName(role)} was quantized by an earlier modifier; let {Name} target it too");
                return block.Weights(role);
            }
            if (LinearRoles.BiasSuffix(role) is { } bias && name == TensorNames.Layer(0, bias)) return block.Bias(role) ?? new float[size];
        }
        if (name == TensorNames.Layer(0, TensorNames.AttnNorm)) return decoder.AttnNorm;
        if (name == TensorNames.Layer(0, TensorNames.FfnNorm)) return decoder.FfnNorm;
        if (name == TensorNames.Layer(0, TensorNames.QNorm)) return decoder.QNorm!;
        if (name == TensorNames.Layer(0, TensorNames.KNorm)) return decoder.KNorm!;
        if (name == TensorNames.FinalNorm) return Enumerable.Repeat(1f, size).ToArray();
        if (name == TensorNames.Embedding) return new float[size];
        throw new InvalidOperationException($"{Name}: no value for the one-block model's tensor '{name}'");
    }

    private static Parameter Parameter(TrainableBlock block, LinearRole role) => role switch
    {
        LinearRole.Q => block.Q,
        LinearRole.K => block.K,
        LinearRole.V => block.V,
        LinearRole.O => block.O,
        LinearRole.Gate => block.Gate,
        LinearRole.Up => block.Up,
        LinearRole.Down => block.Down,
        _ => throw new ArgumentOutOfRangeException(nameof(role)),
    };
}
