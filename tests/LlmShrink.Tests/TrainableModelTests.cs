using LlmShrink.Formats;
using LlmShrink.Model;
using LlmShrink.Training;
using Xunit;
using Xunit.Abstractions;

namespace LlmShrink.Tests;

/// <summary>The trainable model's forward against the inference transformer, and its backward against finite differences of the whole model.</summary>
public class TrainableModelTests(ITestOutputHelper output)
{
    private static LoadedModel Variant(TempDir dir, string name, ModelConfig c)
    {
        string path = dir.File(name + ".bin");
        return name switch
        {
            "llama-gqa" => SyntheticModel.Build(path, c),
            "tied" => SyntheticModel.Build(path, c with { TiedEmbeddings = true }),
            "qwen2-bias-tied" => SyntheticModel.Build(path, c with { Architecture = "qwen2", AttentionBias = true, TiedEmbeddings = true }),
            "qwen3-qknorm" => SyntheticModel.Build(path, c with { Architecture = "qwen3", QkNorm = true, RmsNormEps = 1e-6f }),
            "interleaved-rope-factors" => SyntheticModel.Build(path, c with { RopeStyle = RopeStyle.Interleaved }, ropeFactors: true),
            "mistral-window" => SyntheticModel.Build(path, c with { Architecture = "mistral", SlidingWindow = 2 }),
            "pruned-shapes" => SyntheticModel.Build(path, c.WithLayerShapes([c.Layer(0), new LayerShape(c.NumHeads / 2, c.NumKvHeads / 2, c.IntermediateSize / 2)])),
            "bf16" => SyntheticModel.Build(path, c with { AttentionBias = true }, type: TensorType.BF16),
            "f16-head-dim-64" => SyntheticModel.Build(path, c with { NumHeads = 4, NumKvHeads = 2, HeadDim = 64 }, type: TensorType.F16),
            _ => throw new ArgumentException(name),
        };
    }

    public static TheoryData<string> ForwardVariants => new()
    {
        "llama-gqa", "tied", "qwen2-bias-tied", "qwen3-qknorm", "interleaved-rope-factors", "mistral-window", "pruned-shapes", "bf16", "f16-head-dim-64",
    };

    /// <summary>
    /// Both run the same kernels (MatMul, RmsNorm, SwiGLU, RoPE, softmax) on the same float32 weights, so the logits
    /// agree to the last bits: the only difference is the order of the attention sums (the inference path's written-out
    /// loops for head sizes of whole vectors). Bound: 1e-5 of the largest logit, as the inference path is held to its reference.
    /// </summary>
    [Theory]
    [MemberData(nameof(ForwardVariants))]
    public void Forward_logits_equal_the_inference_transformers(string variant)
    {
        using var dir = new TempDir();
        using var model = Variant(dir, variant, SyntheticModel.Config());
        int[][] sequences = [[3, 17, 0, 66, 42, 5, 5, 29], [1, 60, 11, 2, 2, 40, 7, 9]];
        AssertLogitsMatch(model, sequences);
    }

    [Fact]
    public void TinyLit_forward_logits_equal_the_inference_transformers()
    {
        using var model = HfModelLoader.Load(SharedData.TinyLit);
        var tokens = model.RequireTokenizer().Encode("Pierre one day told her of Rousseau’s view, with which he quite agreed.", addBos: true)[..12];
        AssertLogitsMatch(model, [tokens]);
    }

    private void AssertLogitsMatch(LoadedModel model, int[][] sequences)
    {
        int vocab = model.Config.VocabSize, seqLen = sequences[0].Length;
        var trainable = TrainableModel.FromLoaded(model);
        var logits = trainable.Forward(sequences.SelectMany(s => s).ToArray(), sequences.Length, seqLen);
        using var transformer = new Transformer(model);
        double worst = 0, scale = 0;
        for (int b = 0; b < sequences.Length; b++)
        {
            var expected = new float[seqLen * vocab];
            transformer.Forward(sequences[b], transformer.NewCache(seqLen), expected);
            for (int i = 0; i < expected.Length; i++)
            {
                worst = Math.Max(worst, Math.Abs(logits[b * seqLen * vocab + i] - expected[i]));
                scale = Math.Max(scale, Math.Abs(expected[i]));
            }
        }
        output.WriteLine($"max |Δ logit| = {worst:E2}, largest logit {scale:F2}");
        Assert.True(scale > 1);
        Assert.True(worst <= 1e-5 * scale, $"max |Δ| = {worst} with logit scale {scale}");
    }

    /// <summary>A 2-layer model small enough that every parameter can be checked by finite differences: 4 query heads sharing 2 key/value heads.</summary>
    private static ModelConfig Tiny => SyntheticModel.Config() with
    {
        HiddenSize = 16, IntermediateSize = 24, NumLayers = 2, NumHeads = 4, NumKvHeads = 2, HeadDim = 4, VocabSize = 19,
    };

    private static readonly int[] Tokens = [3, 17, 0, 5, 5, 12]; // 2 sequences of 3
    private static readonly int[] Targets = [17, 0, 5, 12, 1, 18];

    public static TheoryData<string> GradientVariants => new()
    {
        "llama-gqa", "qwen2-bias-tied", "qwen3-qknorm", "interleaved-rope-factors", "mistral-window", "pruned-shapes",
    };

    /// <summary>
    /// One training step's gradients (forward, cross-entropy, backward) against central differences of the double
    /// reference forward (<see cref="ReferenceForward"/>) and cross-entropy: every value of every parameter for the
    /// plain GQA model, 64 evenly spread values per tensor for the variants (which differ from it in a few ops).
    /// Bound 1e-4 relative per parameter tensor: the ops' 1e-5 (<see cref="GradientCheck.AssertClose"/>) compounded
    /// along a path of ~40 ops through two blocks; measured errors are ~1e-6.
    /// </summary>
    [Theory]
    [MemberData(nameof(GradientVariants))]
    public void Whole_model_gradients_match_finite_differences_of_its_loss(string variant)
    {
        using var dir = new TempDir();
        using var model = Variant(dir, variant, Tiny);
        var c = model.Config;
        var trainable = TrainableModel.FromLoaded(model);
        var logits = trainable.Forward(Tokens, 2, 3);
        var dLogits = new float[logits.Length];
        double loss = CrossEntropy.Forward(logits, Targets, dLogits, c.VocabSize);
        trainable.Backward(dLogits);

        var weights = trainable.Parameters.ToDictionary(p => p.Name, p => GradientCheck.ToDouble(p.Value));
        var ropeFactors = model.Weights.Find(TensorNames.RopeFrequencyFactors)?.ToFloatArray();
        double ReferenceLoss()
        {
            double total = 0;
            for (int b = 0; b < 2; b++)
            {
                var rows = ReferenceForward.Logits(c, name => weights[name], ropeFactors, Tokens[(3 * b)..(3 * b + 3)]);
                for (int t = 0; t < 3; t++)
                {
                    double max = rows[t].Max();
                    total += max + Math.Log(rows[t].Sum(z => Math.Exp(z - max))) - rows[t][Targets[3 * b + t]];
                }
            }
            return total / 6;
        }
        Assert.Equal(ReferenceLoss(), loss, 1e-5);

        double worst = 0;
        int perTensor = variant == "llama-gqa" ? int.MaxValue : 64, checkedValues = 0;
        foreach (var p in trainable.Parameters)
        {
            var (indices, numeric) = GradientCheck.NumericSample(weights[p.Name], perTensor, ReferenceLoss);
            worst = Math.Max(worst, GradientCheck.AssertClose([.. indices.Select(i => p.Grad[i])], numeric, p.Name, bound: 1e-4));
            checkedValues += indices.Length;
        }
        output.WriteLine($"{variant}: {trainable.Parameters.Count} tensors, {checkedValues} of {trainable.Parameters.Sum(p => p.Value.Length)} values checked, worst relative error {worst:E2}");
    }

    [Fact]
    public void Gradients_accumulated_over_micro_batches_equal_the_gradient_of_the_concatenated_batch()
    {
        using var dir = new TempDir();
        using var model = Variant(dir, "llama-gqa", Tiny);
        int vocab = model.Config.VocabSize;
        var trainable = TrainableModel.FromLoaded(model);

        var logits = trainable.Forward(Tokens, 2, 3);
        var dLogits = new float[logits.Length];
        double batchLoss = CrossEntropy.Forward(logits, Targets, dLogits, vocab);
        trainable.Backward(dLogits);
        var whole = trainable.Parameters.Select(p => (float[])p.Grad.Clone()).ToArray();

        trainable.ZeroGrad();
        double accumulatedLoss = 0;
        for (int micro = 0; micro < 2; micro++)
        {
            logits = trainable.Forward(Tokens.AsSpan(3 * micro, 3), 1, 3);
            dLogits = new float[logits.Length];
            accumulatedLoss += CrossEntropy.Forward(logits, Targets.AsSpan(3 * micro, 3), dLogits, vocab, weight: 0.5f) / 2;
            trainable.Backward(dLogits);
        }
        Assert.Equal(batchLoss, accumulatedLoss, 1e-6);
        for (int i = 0; i < whole.Length; i++)
        {
            // The same sums in another order (per micro-batch, then added): float rounding only.
            double error = GradientCheck.RelativeError(trainable.Parameters[i].Grad, GradientCheck.ToDouble(whole[i]));
            Assert.True(error < 1e-6, $"{trainable.Parameters[i].Name}: relative difference {error:E2}");
        }
    }

    [Theory]
    [InlineData("llama-gqa")]
    [InlineData("qwen3-qknorm")]
    [InlineData("pruned-shapes")]
    public void Recomputing_block_activations_gives_the_same_gradients_bit_for_bit(string variant)
    {
        using var dir = new TempDir();
        using var model = Variant(dir, variant, Tiny);
        var c = model.Config;
        float[][] Gradients(bool recompute, out long activationFloats)
        {
            var trainable = TrainableModel.FromLoaded(model);
            trainable.Recompute = recompute;
            var logits = trainable.Forward(Tokens, 2, 3);
            var dLogits = new float[logits.Length];
            CrossEntropy.Forward(logits, Targets, dLogits, c.VocabSize);
            trainable.Backward(dLogits);
            activationFloats = trainable.ActivationFloats;
            return [.. trainable.Parameters.Select(p => p.Grad)];
        }
        var kept = Gradients(false, out long keptFloats);
        var recomputed = Gradients(true, out long recomputedFloats);
        for (int i = 0; i < kept.Length; i++) Assert.Equal(kept[i], recomputed[i]);

        // What one block keeps (N = 6 tokens, 2 sequences of 3): norm outputs, 1/rms, q, k, v, probabilities, attention
        // output, mid residual, gate, up, SwiGLU output, and with qk-norm q and k before it and their 1/rms.
        long Block(LayerShape s) => 6L * (3 * c.HiddenSize + 2 + 2 * s.Heads * c.HeadDim + 2 * s.KvHeads * c.HeadDim + 3 * s.IntermediateSize)
            + 2L * s.Heads * 3 * 3 + (c.QkNorm ? 6L * (s.Heads * c.HeadDim + s.KvHeads * c.HeadDim + s.Heads + s.KvHeads) : 0);
        long common = 6L * c.HiddenSize * (c.NumLayers + 2) + 6 + 6L * c.VocabSize; // block inputs, final norm input/output/1/rms, logits
        Assert.Equal(common + Block(c.Layer(0)) + Block(c.Layer(1)), keptFloats);
        Assert.Equal(common + Block(new LayerShape(c.NumHeads, c.NumKvHeads, c.IntermediateSize)), recomputedFloats);
    }

    [Fact]
    public void Masked_weights_stay_exactly_zero_through_adamw_steps()
    {
        using var dir = new TempDir();
        using var model = Variant(dir, "llama-gqa", Tiny);
        var trainable = TrainableModel.FromLoaded(model);
        var q = trainable.Blocks[0].Q;
        // A 2:4 pattern: the two smaller of every four consecutive inputs pruned, then frozen as the mask.
        for (int g = 0; g < q.Value.Length; g += 4)
            foreach (int i in Enumerable.Range(g, 4).OrderBy(i => Math.Abs(q.Value[i])).Take(2)) q.Value[i] = 0;
        q.MaskZeros();
        var before = (float[])q.Value.Clone();

        var optimizer = new AdamW(weightDecay: 0.1f);
        for (int step = 0; step < 3; step++)
        {
            trainable.ZeroGrad();
            var logits = trainable.Forward(Tokens, 2, 3);
            var dLogits = new float[logits.Length];
            CrossEntropy.Forward(logits, Targets, dLogits, Tiny.VocabSize);
            trainable.Backward(dLogits);
            optimizer.Update(trainable.Parameters, 1e-2f);
        }
        int kept = 0;
        for (int i = 0; i < before.Length; i++)
        {
            if (q.Mask![i] == 0) Assert.Equal(0f, q.Value[i]);
            else { Assert.NotEqual(before[i], q.Value[i]); kept++; }
        }
        Assert.Equal(before.Length / 2, kept);
    }
}
