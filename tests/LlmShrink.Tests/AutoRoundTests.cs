using LlmShrink.Compression;
using LlmShrink.Compression.Quantization;
using LlmShrink.Compression.Recipes;
using LlmShrink.Model;
using LlmShrink.Training;
using Xunit;
using Xunit.Abstractions;

namespace LlmShrink.Tests;

/// <summary>AutoRound: the learned rounding's gradients, its reconstruction objective, and the method in the pipeline.</summary>
[Collection(CompressedTinyLit.Collection)]
public class AutoRoundTests(ITestOutputHelper output)
{
    private static readonly LinearRole[] Roles = [LinearRole.Q, LinearRole.K, LinearRole.V, LinearRole.O, LinearRole.Gate, LinearRole.Up, LinearRole.Down];

    /// <summary>A model of one block whose layer 0 is <paramref name="c"/>'s block 0, with a one-token vocabulary nobody reads.</summary>
    private static ModelConfig OneBlock(ModelConfig c) => c.WithLayerShapes([c.Layer(0)]) with { VocabSize = 1, TiedEmbeddings = true };

    private static Parameter Weight(TrainableBlock b, LinearRole role) => role switch
    {
        LinearRole.Q => b.Q, LinearRole.K => b.K, LinearRole.V => b.V, LinearRole.O => b.O,
        LinearRole.Gate => b.Gate, LinearRole.Up => b.Up, _ => b.Down,
    };

    /// <summary>
    /// ∂L/∂V, ∂L/∂α, ∂L/∂β of L = ‖block(X; Ŵ) − Y‖²/(N·d) for every layer of a block (48 wide, MLP 72: groups of 32 leave
    /// partial groups of 16 and 8), at random V ∈ (−0.5, 0.5) and α, β ∈ (0.55, 0.95) where at 2 and 3 bits many codes
    /// are clamped, against central differences of a double-precision reference: <see cref="ReferenceForward.Blocks"/> on
    /// Ŵ written out from AutoRound's definition with the straight-through estimator made exact — each round() replaced by
    /// its argument plus the rounding offset it had at the point of the check, held fixed (likewise the float16 rounding of
    /// the scale and which codes are clamped). That surrogate is smooth and its gradient is by definition the STE
    /// gradient, so finite differences check the chain rule through the whole block exactly. Bound 1e-4 relative per
    /// tensor, as the whole-model gradient check (float32 products through the block's ops).
    /// </summary>
    [Theory]
    [InlineData(3, false)]
    [InlineData(2, true)]
    public void Gradients_of_the_block_loss_match_finite_differences_of_the_straight_through_surrogate(int bits, bool symmetric)
    {
        var c = OneBlock(SyntheticModel.Config());
        var weights = SyntheticModel.RandomWeights(c, seed: 5);
        var trainable = TrainableModel.Create(c, (name, _) => (float[])weights[name].Data.Clone(), default);
        var scheme = QuantScheme.Grouped(bits, 32, symmetric);
        var random = new Random(7);
        var layers = Roles.Select(role =>
        {
            var p = Weight(trainable.Blocks[0], role);
            var r = new LearnedRounding(weights[p.Name].Data, p.Rows, p.Columns, scheme);
            for (int i = 0; i < r.Offsets.Length; i++) r.Offsets[i] = 0.98f * (random.NextSingle() - 0.5f);
            for (int i = 0; i < r.MaxFactors.Length; i++)
            {
                r.MaxFactors[i] = 0.55f + 0.4f * random.NextSingle();
                r.MinFactors[i] = 0.55f + 0.4f * random.NextSingle();
            }
            return (Weight: p, Rounding: r);
        }).ToList();
        const int batch = 2, seqLen = 3;
        int d = c.HiddenSize;
        var x = Enumerable.Range(0, batch * seqLen * d).Select(_ => 2 * random.NextSingle() - 1).ToArray();
        var y = Enumerable.Range(0, x.Length).Select(_ => 2 * random.NextSingle() - 1).ToArray();

        foreach (var (p, r) in layers) r.FakeQuantize(p.Value);
        trainable.ZeroGrad();
        var result = trainable.ForwardBlocks(x, batch, seqLen).ToArray();
        var dOutput = result.Select((o, i) => 2 * (o - y[i]) / result.Length).ToArray();
        double loss = result.Select((o, i) => (double)(o - y[i]) * (o - y[i])).Sum() / result.Length;
        trainable.BackwardBlocks(dOutput);
        foreach (var (p, r) in layers)
        {
            r.ZeroGrad();
            r.Backward(p.Grad);
        }

        var surrogates = layers.ToDictionary(l => l.Weight.Name, l => new Surrogate(l.Rounding, weights[l.Weight.Name].Data));
        var dense = weights.ToDictionary(kv => kv.Key, kv => GradientCheck.ToDouble(kv.Value.Data));
        double ReferenceLoss()
        {
            var w = surrogates.ToDictionary(kv => kv.Key, kv => kv.Value.Weights());
            double sum = 0;
            for (int b = 0; b < batch; b++)
            {
                var rows = Enumerable.Range(0, seqLen).Select(t => x.AsSpan((b * seqLen + t) * d, d).ToArray().Select(v => (double)v).ToArray()).ToArray();
                var outRows = ReferenceForward.Blocks(c, name => w.TryGetValue(name, out var q) ? q : dense[name], null, rows);
                for (int t = 0; t < seqLen; t++)
                    for (int i = 0; i < d; i++) sum += Math.Pow(outRows[t][i] - y[(b * seqLen + t) * d + i], 2);
            }
            return sum / (batch * seqLen * d);
        }
        Assert.Equal(1, ReferenceLoss() / loss, 1e-5);

        double worst = 0;
        foreach (var (p, r) in layers)
        {
            var s = surrogates[p.Name];
            var (vi, vNumeric) = GradientCheck.NumericSample(s.V, 64, ReferenceLoss);
            worst = Math.Max(worst, GradientCheck.AssertClose([.. vi.Select(i => r.OffsetGrad[i])], vNumeric, p.Name + " V", bound: 1e-4));
            var alphaNumeric = GradientCheck.Numeric(s.Alpha, ReferenceLoss);
            worst = Math.Max(worst, GradientCheck.AssertClose(r.MaxFactorGrad, alphaNumeric, p.Name + " α", bound: 1e-4));
            var betaNumeric = GradientCheck.Numeric(s.Beta, ReferenceLoss);
            worst = Math.Max(worst, GradientCheck.AssertClose(r.MinFactorGrad, betaNumeric, p.Name + " β", bound: 1e-4));
        }
        output.WriteLine($"{bits}-bit {(symmetric ? "sym" : "asym")}: loss {loss:E4}, worst relative gradient error {worst:E2}");
    }

    /// <summary>
    /// The method's own guarantee, on tinylit-8m's first block (2-bit, groups of 64, 8 calibration samples × 64 tokens of
    /// the calibration text, the block's outputs as targets): the starting point is exactly round-to-nearest, 40 steps
    /// of signed gradient descent lower the block output's MSE over those samples below 0.3 of it (measured: 1.04e-3 → 1.45e-4), and the layers stored from
    /// the optimized V, α, β dequantize to exactly the weights the optimization measured.
    /// </summary>
    [Fact]
    public void Optimized_rounding_lowers_the_block_output_error_below_round_to_nearest()
    {
        using var model = ModelLoader.Load(SharedData.TinyLit);
        using var transformer = new Transformer(model);
        var c = OneBlock(model.Config);
        var trainable = TrainableModel.Create(c, (name, shape) => name switch
        {
            TensorNames.Embedding => new float[shape[0] * shape[1]],
            TensorNames.FinalNorm => Enumerable.Repeat(1f, shape[0]).ToArray(),
            _ => model.Weights.Get(name).ToFloatArray(),
        }, default);
        const int seqLen = 64;
        var calibration = CalibrationSet.FromFile(SharedData.Corpus("tinylit_calib.txt"), model.RequireTokenizer(), 8, seqLen, seed: 0);
        var inputs = calibration.Samples.Select(sample =>
        {
            var h = new float[seqLen * c.HiddenSize];
            transformer.Embed(sample, h);
            return h;
        }).ToList();
        var targets = inputs.Select(h => trainable.ForwardBlocks(h, 1, seqLen).ToArray()).ToList();

        var scheme = QuantScheme.Grouped(2, 64, symmetric: true);
        var layers = Roles.Select(role =>
        {
            var p = Weight(trainable.Blocks[0], role);
            var rtnWeights = Rtn.Quantize(p.Value, p.Rows, p.Columns, scheme).Dequantize();
            var rounding = new LearnedRounding((float[])p.Value.Clone(), p.Rows, p.Columns, scheme);
            rounding.FakeQuantize(p.Value);
            Assert.Equal(rtnWeights, p.Value);
            return (Weight: p, Rounding: rounding);
        }).ToList();
        double rtn = BlockReconstruction.Mse(trainable, layers, inputs, targets, seqLen, 4);

        var result = BlockReconstruction.Run(trainable, layers, inputs, targets, seqLen, new AutoRoundOptions(Steps: 40, Batch: 4, LearningRate: 1.0 / 40));
        output.WriteLine($"block 0, 2-bit g64: MSE {result.InitialMse:E4} (round-to-nearest) → {result.FinalMse:E4}");
        Assert.Equal(rtn, result.InitialMse);
        Assert.True(result.Kept);
        Assert.True(result.FinalMse < 0.3 * result.InitialMse, $"MSE {result.FinalMse:E4} vs round-to-nearest {result.InitialMse:E4}");
        foreach (var (p, r) in layers)
        {
            r.FakeQuantize(p.Value);
            Assert.Equal(p.Value, r.Quantize().Dequantize());
        }
    }

    /// <summary>
    /// Issue 14's orderings on held-out text, at a cost CI can pay: GPTQ and AutoRound on the same small calibration of
    /// <see cref="CompressedTinyLit"/> (8 samples × 128 tokens), AutoRound with 20 steps of 4 samples per block instead of
    /// the presets' 200 of 8, scored on the first 20 chunks of 256 tokens of tinylit_eval.txt (llama.cpp protocol).
    /// Measured here: w3g128 KL autoround 1.100e-2 vs gptq 1.625e-2 (0.68×; perplexity 76.08 vs 77.03), w2g64 autoround
    /// 6.31e-2 vs gptq 2.005e-1 (0.31×; 80.76 vs 97.14), so both hold with room (the bounds are issue 14's: below GPTQ at
    /// 3 bits, at most 0.6× at 2). The presets with the CLI's defaults (128 × 256 calibration, 200 steps of 8, whole text,
    /// standard protocol) give 0.40× (4.65e-3 vs 1.159e-2) and 0.24× (2.55e-2 vs 1.059e-1).
    /// </summary>
    [Fact]
    public void Autoround_beats_gptq_at_three_bits_and_cuts_its_two_bit_kl_below_six_tenths()
    {
        const string Short = "\n    steps: 20\n    batch: 4";
        const string W3 = "bits: 3\n    group_size: 128\n    symmetric: true", W2 = "bits: 2\n    group_size: 64\n    symmetric: true";
        const int Chunks = 20;
        var gptq3 = HeldOutScore.Of(CompressedTinyLit.Folder("gptq", W3), Chunks);
        var autoround3 = HeldOutScore.Of(CompressedTinyLit.Folder("autoround", W3 + Short), Chunks);
        var gptq2 = HeldOutScore.Of(CompressedTinyLit.Folder("gptq", W2), Chunks);
        var autoround2 = HeldOutScore.Of(CompressedTinyLit.Folder("autoround", W2 + Short), Chunks);
        output.WriteLine($"w3g128 KL autoround {autoround3.Kl:E3} (ppl {autoround3.Ppl:F3}) vs gptq {gptq3.Kl:E3} ({gptq3.Ppl:F3}): {autoround3.Kl / gptq3.Kl:F2}×");
        output.WriteLine($"w2g64 KL autoround {autoround2.Kl:E3} (ppl {autoround2.Ppl:F3}) vs gptq {gptq2.Kl:E3} ({gptq2.Ppl:F3}): {autoround2.Kl / gptq2.Kl:F2}×");
        Assert.True(autoround3.Kl < gptq3.Kl, $"w3g128: KL autoround {autoround3.Kl:E3} vs gptq {gptq3.Kl:E3}");
        Assert.True(autoround2.Kl <= 0.6 * gptq2.Kl, $"w2g64: KL autoround {autoround2.Kl:E3} vs gptq {gptq2.Kl:E3} ({autoround2.Kl / gptq2.Kl:F2}×)");
    }

    /// <summary>Every key of an autoround modifier survives writing the recipe out as YAML and reading it back; bad values are one-line errors.</summary>
    [Fact]
    public void Recipe_round_trips_through_yaml()
    {
        var recipe = Recipe.Parse("""
            modifiers:
              - method: autoround
                targets: [Linear]
                ignore: [lm_head]
                bits: 3
                group_size: 64
                symmetric: false
                steps: 50
                batch: 4
                lr: 0.01
                seed: 3
                reference: block
            """, "test", "test.yaml");
        var again = Recipe.From("again", recipe.Modifiers.Select(m => m.Spec));
        var (first, second) = (recipe.Modifiers.Single(), again.Modifiers.Single());
        Assert.Equal(first.Spec.Parameters, second.Spec.Parameters);
        Assert.Equal(["lm_head"], second.Spec.Ignore);
        Assert.Equal(StatisticsNeeds.BlockOutputs, second.Method.Needs);
        Assert.Equal(StatisticsNeeds.ReferenceOutputs, Recipe.Load("w2g64-autoround").Modifiers.Single().Method.Needs);
        foreach (var bad in new[] { "steps: 0", "granularity: tensor", "reference: teacher", "lr: 2" })
        {
            var e = Assert.Throws<ShrinkException>(() => Recipe.Parse($"modifiers:\n  - method: autoround\n    {bad}\n", "bad", "bad.yaml"));
            Assert.DoesNotContain('\n', e.Message);
        }
        Assert.Throws<ShrinkException>(() => Recipe.Parse("modifiers:\n  - method: autoround\n    targets: [lm_head]\n", "head", "head.yaml"));
    }

    /// <summary>
    /// AutoRound's Ŵ(V, α, β) in double with every discrete choice of the float quantizer at the point of the check held
    /// fixed: round(u) = u + δ (δ as it was), the stored scale s = s(α, β) + σ (σ its float16 rounding then), the
    /// asymmetric zero point z = −min'/s + ε, and whether each code was clamped (and to which end).
    /// </summary>
    private sealed class Surrogate
    {
        public readonly double[] V, Alpha, Beta;
        private readonly double[] _w, _min, _max, _sigma, _epsilon, _delta;
        private readonly int[] _clamped; // −1 in range, else the code it was clamped to
        private readonly int _rows, _columns, _width, _maxCode;
        private readonly bool _symmetric;

        public Surrogate(LearnedRounding r, float[] w)
        {
            (_rows, _columns, _width, _maxCode, _symmetric) = (r.Rows, r.Columns, r.Scheme.GroupWidth(r.Columns), r.Scheme.MaxCode, r.Scheme.Symmetric);
            _w = GradientCheck.ToDouble(w);
            V = GradientCheck.ToDouble(r.Offsets);
            Alpha = GradientCheck.ToDouble(r.MaxFactors);
            Beta = GradientCheck.ToDouble(r.MinFactors);
            int grids = Alpha.Length;
            _min = new double[grids]; _max = new double[grids]; _sigma = new double[grids]; _epsilon = new double[grids];
            for (int row = 0; row < _rows; row++)
                for (int g = 0; g * _width < _columns; g++)
                {
                    int i = g * _rows + row;
                    var group = Enumerable.Range(g * _width, Math.Min(_width, _columns - g * _width)).Select(col => _w[row * _columns + col]).ToArray();
                    _min[i] = Math.Min(group.Min(), 0);
                    _max[i] = Math.Max(group.Max(), 0);
                    var grid = r.Grid(g, row);
                    _sigma[i] = grid.Scale - ExactScale(i);
                    _epsilon[i] = grid.Zero - (-Beta[i] * _min[i] / grid.Scale);
                }
            _delta = new double[_w.Length];
            _clamped = new int[_w.Length];
            for (int row = 0; row < _rows; row++)
                for (int col = 0; col < _columns; col++)
                {
                    int k = row * _columns + col;
                    var grid = r.Grid(col / _width, row);
                    // The float quantizer's own rounding decision (float arithmetic), then its offset in double.
                    int rounded = (int)MathF.Round(w[k] / grid.Scale + r.Offsets[k], MidpointRounding.ToEven);
                    _delta[k] = rounded - (_w[k] / grid.Scale + V[k]);
                    int q = rounded + grid.Zero;
                    _clamped[k] = q < 0 ? 0 : q > _maxCode ? _maxCode : -1;
                }
        }

        private double ExactScale(int i)
        {
            double lo = Beta[i] * _min[i], hi = Alpha[i] * _max[i];
            return _symmetric ? 2 * Math.Max(hi, -lo) / _maxCode : (hi - lo) / _maxCode;
        }

        public double[] Weights()
        {
            var result = new double[_w.Length];
            for (int row = 0; row < _rows; row++)
                for (int col = 0; col < _columns; col++)
                {
                    int k = row * _columns + col, i = col / _width * _rows + row;
                    double s = ExactScale(i) + _sigma[i];
                    if (_clamped[k] < 0) result[k] = s * (_w[k] / s + V[k] + _delta[k]);
                    else
                    {
                        double zero = _symmetric ? (_maxCode + 1) / 2 : -Beta[i] * _min[i] / s + _epsilon[i];
                        result[k] = s * (_clamped[k] - zero);
                    }
                }
            return result;
        }
    }
}
