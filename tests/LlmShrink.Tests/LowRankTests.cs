using LlmShrink.Compression;
using LlmShrink.Compression.LowRank;
using LlmShrink.Compression.Recipes;
using LlmShrink.Evaluation;
using LlmShrink.Export;
using LlmShrink.Formats;
using LlmShrink.Model;
using LlmShrink.Representations;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>
/// Low-rank factorization (issue 13): the truncation identities each transform guarantees, the rank rules, the orderings
/// on tinylit-8m at a fifth fewer block-linear parameters, and the checkpoint and export round trips.
/// </summary>
public class LowRankTests
{
    internal static float[] RandomMatrix(Random random, int rows, int columns, double scale = 1)
    {
        var a = new float[rows * columns];
        for (int i = 0; i < a.Length; i++) a[i] = (float)((random.NextDouble() * 2 - 1) * scale);
        return a;
    }

    /// <summary>
    /// Calibration-like inputs [tokens, n] whose channels differ in scale by two orders of magnitude and are correlated
    /// (a shared component), as activations are: the case where weighting the truncation by X matters.
    /// </summary>
    internal static float[] CorrelatedInputs(Random random, int tokens, int n)
    {
        var x = new float[tokens * n];
        var channelScale = Enumerable.Range(0, n).Select(j => Math.Pow(10, 2.0 * j / n - 1)).ToArray();
        for (int t = 0; t < tokens; t++)
        {
            double shared = random.NextDouble() * 2 - 1;
            for (int j = 0; j < n; j++) x[t * n + j] = (float)(channelScale[j] * (0.7 * shared + (random.NextDouble() * 2 - 1)));
        }
        return x;
    }

    /// <summary>H = XᵀX for X [tokens, n] (the Gram matrix of the input rows), in float64.</summary>
    internal static double[] Gram(float[] x, int tokens, int n)
    {
        var h = new double[n * n];
        for (int t = 0; t < tokens; t++)
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++) h[i * n + j] += (double)x[t * n + i] * x[t * n + j];
        return h;
    }

    /// <summary>‖X·(W − U·V)ᵀ‖_F²: the output error of the factors on the inputs, in float64.</summary>
    internal static double OutputError(float[] w, LowRankFactors f, float[] x, int tokens)
    {
        int m = f.Rows, n = f.Columns, r = f.Rank;
        double error = 0;
        var difference = new double[n];
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
            {
                double product = 0;
                for (int k = 0; k < r; k++) product += (double)f.U[i * r + k] * f.V[k * n + j];
                difference[j] = w[i * n + j] - product;
            }
            for (int t = 0; t < tokens; t++)
            {
                double y = 0;
                for (int j = 0; j < n; j++) y += difference[j] * x[t * n + j];
                error += y * y;
            }
        }
        return error;
    }

    [Fact]
    public void Whitened_truncation_loses_exactly_the_dropped_squared_singular_values_and_no_more_than_plain_svd()
    {
        var random = new Random(3);
        const int m = 24, n = 40, tokens = 300;
        var w = RandomMatrix(random, m, n);
        var x = CorrelatedInputs(random, tokens, n);
        var whitened = WeightSpectrum.Of(w, m, n, InputTransform.Whitening(Gram(x, tokens, n), n, dampening: 0));
        var plain = WeightSpectrum.Of(w, m, n, InputTransform.Identity(n));
        foreach (int rank in new[] { 1, 6, 15, 23 })
        {
            double measured = OutputError(w, whitened.Truncate(rank), x, tokens);
            // Only float32 factors separate the two: the identity holds to ~1e-6 of the output energy.
            Assert.Equal(whitened.TruncationLoss(rank), measured, whitened.Energy * 2e-6);
            // SVD-LLM's truncation is the best rank-r fit in ‖·X‖, so plain SVD's (best in ‖·‖_F) cannot beat it on X.
            Assert.True(measured <= OutputError(w, plain.Truncate(rank), x, tokens) * (1 + 1e-6), $"rank {rank}");
        }
        Assert.Equal(0, whitened.TruncationLoss(m));
    }

    [Fact]
    public void Every_transform_gives_back_the_weight_at_full_rank()
    {
        var random = new Random(5);
        const int m = 30, n = 18;
        var w = RandomMatrix(random, m, n);
        var x = CorrelatedInputs(random, 100, n);
        var scales = Compression.Methods.LowRankMethod.ActivationScales([.. Enumerable.Range(0, n).Select(j => j == 3 ? 0f : 0.01f * (j + 1))], 0.5);
        Assert.Equal(Math.Sqrt(0.01), scales[3], 1e-7); // a dead channel takes the smallest active channel's scale
        foreach (var transform in new[] { InputTransform.Identity(n), InputTransform.Diagonal(scales), InputTransform.Whitening(Gram(x, 100, n), n, 1e-6) })
        {
            var f = WeightSpectrum.Of(w, m, n, transform).Truncate(n);
            var product = LowRankRepresentation.Multiply(f.U, f.V, m, n, n);
            for (int i = 0; i < w.Length; i++) Assert.Equal(w[i], product[i], 2e-5);
        }
    }

    /// <summary>
    /// SVD-LLM's whitening works by blocks of L's rows (GEMMs); on more inputs than one block (600: two whole blocks of 256
    /// and a ragged one) W·L must equal the plain triangular product and v·L⁻¹ must undo it. L itself is W·L for W = I.
    /// </summary>
    [Fact]
    public void Whitening_by_blocks_matches_the_plain_triangular_products()
    {
        var random = new Random(29);
        const int n = 600, m = 7, tokens = 650;
        var h = Gram(CorrelatedInputs(random, tokens, n), tokens, n);
        var whitening = InputTransform.Whitening(h, n, 1e-6);
        var identity = new float[n * n];
        for (int i = 0; i < n; i++) identity[i * n + i] = 1;
        var l = whitening.Apply(identity, n);
        double meanDiagonal = Enumerable.Range(0, n).Average(i => h[i * n + i]), damped = whitening.Dampening * meanDiagonal;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
            {
                if (j > i) { Assert.Equal(0, l[i * n + j]); continue; }
                double product = 0; // (L·Lᵀ)[i, j] = H[i, j] (+ λ on the diagonal)
                for (int k = 0; k <= j; k++) product += l[i * n + k] * l[j * n + k];
                Assert.Equal(h[i * n + j] + (i == j ? damped : 0), product, 1e-10 * meanDiagonal);
            }

        var w = RandomMatrix(random, m, n);
        var wl = whitening.Apply(w, m);
        for (int r = 0; r < m; r++)
            for (int j = 0; j < n; j++)
            {
                double expected = 0, scale = 0;
                for (int k = j; k < n; k++)
                {
                    expected += w[r * n + k] * l[k * n + j];
                    scale += Math.Abs(w[r * n + k] * l[k * n + j]);
                }
                Assert.Equal(expected, wl[r * n + j], 1e-12 * scale);
            }
        whitening.SolveRows(wl, m);
        for (int i = 0; i < w.Length; i++) Assert.Equal(w[i], wl[i], 1e-9);
    }

    [Fact]
    public void Ranks_follow_the_ratio_and_stop_paying_at_mn_over_m_plus_n()
    {
        Assert.Equal(102, LowRankFactors.RankForRatio(256, 256, 0.2)); // 0.8 · 128 = 102.4
        Assert.Equal(153, LowRankFactors.RankForRatio(768, 256, 0.2)); // 0.8 · 192
        Assert.Equal(51, LowRankFactors.RankForRatio(128, 256, 0.4)); // 0.6 · 85.33
        Assert.True(LowRankFactors.Pays(127, 256, 256));
        Assert.False(LowRankFactors.Pays(128, 256, 256));
        Assert.Equal(1, LowRankFactors.RankForRatio(10, 10, 0.99));
    }

    [Fact]
    public void Spectrum_allocation_keeps_the_budget_and_loses_less_weighted_relative_energy_than_uniform_ranks()
    {
        var random = new Random(11);
        // Three matrices whose spectra decay at different speeds: a fast-decaying one needs few directions.
        var shapes = new[] { (64, 64, 0.5), (96, 64, 0.05), (64, 128, 0.15) };
        var spectra = shapes.Select(s =>
        {
            var (m, n, decay) = s;
            var w = new float[m * n];
            for (int k = 0; k < Math.Min(m, n); k++)
            {
                var a = RandomMatrix(random, m, 1);
                var b = RandomMatrix(random, 1, n);
                double sigma = Math.Exp(-decay * k);
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < n; j++) w[i * n + j] += (float)(sigma * a[i] * b[j]);
            }
            return WeightSpectrum.Of(w, m, n, InputTransform.Identity(n));
        }).ToList();
        const double ratio = 0.5;
        var ranks = RankAllocation.FromSpectra(spectra, ratio);
        double budget = (1 - ratio) * spectra.Sum(s => s.Rows * s.Columns);
        double stored = spectra.Select((s, i) => ranks[i] is { } r ? r * (s.Rows + s.Columns) : (double)s.Rows * s.Columns).Sum();
        Assert.True(stored <= budget, $"{stored} values stored for a budget of {budget}");
        // The objective: each matrix's relative truncation loss weighted by its size mn.
        double RelativeLoss(int i, int? rank) => rank is { } r ? spectra[i].TruncationLoss(r) / spectra[i].Energy * spectra[i].Rows * spectra[i].Columns : 0;
        double allocated = Enumerable.Range(0, 3).Sum(i => RelativeLoss(i, ranks[i]));
        double uniform = Enumerable.Range(0, 3).Sum(i => RelativeLoss(i, RankAllocation.Uniform(spectra[i].Rows, spectra[i].Columns, ratio)));
        Assert.True(allocated < 0.8 * uniform, $"allocated {allocated} vs uniform {uniform} (ranks {string.Join(", ", ranks)})");
        Assert.True(ranks[1] > ranks[0], "the slowly decaying spectrum gets more directions");
    }

    /// <summary>
    /// The orderings the transforms guarantee at a fifth fewer block-linear parameters, on held-out text. Measured with
    /// this calibration (32 × 256 tokens, 40 chunks): see the assertion messages for the figures.
    /// </summary>
    [Fact]
    public void At_a_fifth_fewer_parameters_svd_llm_loses_less_than_asvd_which_loses_less_than_svd()
    {
        var svd = CompressionTests.Compress("svd-20", 32, 40);
        var asvd = CompressionTests.Compress("asvd-20", 32, 40);
        var svdLlm = CompressionTests.Compress("svd-llm-20", 32, 40);
        Assert.True(svdLlm.Kl < asvd.Kl && asvd.Kl < svd.Kl, $"KL svd-llm {svdLlm.Kl:E3}, asvd {asvd.Kl:E3}, svd {svd.Kl:E3}");
        Assert.True(svdLlm.Ppl < svd.Ppl, $"perplexity svd-llm {svdLlm.Ppl:F3}, svd {svd.Ppl:F3}");
    }

    [Fact]
    public void A_low_rank_checkpoint_stores_a_fifth_fewer_parameters_reloads_identically_and_exports_its_product()
    {
        using var dir = new TempDir();
        string folder = dir.File("svd-llm");
        using (var compressed = TinyLitCompression.Run(Recipe.Load("svd-llm-20"), folder))
        {
            Assert.All(compressed.Result.Layers, l => Assert.StartsWith("low-rank r=", l.Scheme));
            TinyLitCompression.AssertReloadsIdentically(compressed.Transformer, folder);
        }
        using var model = ModelLoader.Load(folder);
        using var original = ModelLoader.Load(SharedData.TinyLit);
        var statistics = ModelStatistics.Of(model.Config, model.Weights);
        var reference = ModelStatistics.Of(original.Config, original.Weights);
        long lmHead = (long)model.Config.VocabSize * model.Config.HiddenSize;
        double kept = (double)(statistics.MatmulParameters - lmHead) / (reference.MatmulParameters - lmHead);
        Assert.InRange(kept, 0.78, 0.8); // ⌊0.8·mn/(m + n)⌋ per matrix: at most 80 %, a rank's rounding below it
        var q = model.Weights.Get("model.layers.0.self_attn.q_proj.lowrank_u.weight");
        Assert.Equal(TensorType.F16, q.Type); // a float32 checkpoint's factors are stored F16
        Assert.Equal(new long[] { 256, 102 }, q.Shape);

        // The safetensors export writes U·V as the plain weight, and runs the same function up to that product's rounding.
        string exported = dir.File("dense");
        SafetensorsExporter.Export(model, TensorType.F32, exported);
        using var dense = ModelLoader.Load(exported);
        const string module = "model.layers.3.mlp.down_proj";
        var product = LowRankRepresentation.Instance.Multiplied(model.Weights, module)();
        Assert.Equal(product, dense.Weights.Get(module + ".weight").ToFloatArray());
        string gguf = dir.File("model.gguf");
        GgufExporter.Export(model, TensorType.F32, gguf);
        using var fromGguf = ModelLoader.Load(gguf);
        using var lowRank = new Transformer(model);
        using var multiplied = new Transformer(fromGguf);
        var tokens = CompressedTinyLit.EvalTokens(model, 32);
        var expected = new float[tokens.Length * model.Config.VocabSize];
        var actual = new float[expected.Length];
        lowRank.Forward(tokens, lowRank.NewCache(tokens.Length), expected);
        multiplied.Forward(tokens, multiplied.NewCache(tokens.Length), actual);
        for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], actual[i], 2e-3);
    }

    private static string FactorRecipe(string extra) => $"""
        modifiers:
          - method: svd-llm
            targets: [Linear]
            ignore: [lm_head]
            rank: 64{extra}
        """;

    /// <summary>
    /// Factors quantized by GPTQ (V against XXᵀ, U refitted to W·X given V̂·X, then against V̂·H·V̂ᵀ): 8-bit factors lose
    /// next to nothing against F16 ones at the same rank, 4-bit ones more; both reload to the same function and export
    /// their product.
    /// </summary>
    [Fact]
    public void Quantized_factors_cost_little_at_eight_bits_and_reload_identically()
    {
        using var dir = new TempDir();
        double SummedError(TinyLitCompression c) => c.Result.Layers.Sum(l => l.RelativeOutputError);
        using var float16 = TinyLitCompression.Run(Recipe.Parse(FactorRecipe(""), "f16", "test.yaml"), output: null);
        using var eight = TinyLitCompression.Run(Recipe.Parse(FactorRecipe("\n    bits: 8\n    group_size: 32"), "q8", "test.yaml"), output: null);
        string folder = dir.File("q4");
        using (var four = TinyLitCompression.Run(Recipe.Parse(FactorRecipe("\n    bits: 4\n    group_size: 32"), "q4", "test.yaml"), folder))
        {
            Assert.All(four.Result.Layers, l => Assert.Equal("low-rank r=64, factors 4-bit sym g32", l.Scheme));
            // Codes, one F16 scale and one packed 4-bit zero per 32 values: 4 + 20/32 bits per factor value.
            var q = four.Result.Layers.First(l => l.Module == "model.layers.0.self_attn.q_proj");
            Assert.Equal(64.0 * (256 + 256) * (4 + 20.0 / 32), q.StoredBits);
            Assert.True(SummedError(four) > SummedError(eight), $"4-bit {SummedError(four)} vs 8-bit {SummedError(eight)}");
            TinyLitCompression.AssertReloadsIdentically(four.Transformer, folder);
        }
        Assert.True(SummedError(eight) < 1.02 * SummedError(float16), $"8-bit {SummedError(eight)} vs F16 {SummedError(float16)}");

        using var model = ModelLoader.Load(folder);
        Assert.Equal(TensorType.I32, model.Weights.Get("model.layers.0.mlp.up_proj.lowrank_v.qweight").Type);
        string exported = dir.File("dense");
        SafetensorsExporter.Export(model, TensorType.F32, exported);
        using var dense = ModelLoader.Load(exported);
        const string module = "model.layers.5.self_attn.o_proj";
        Assert.Equal(LowRankRepresentation.Instance.Multiplied(model.Weights, module)(), dense.Weights.Get(module + ".weight").ToFloatArray());
    }

    [Fact]
    public void A_rank_that_does_not_pay_leaves_the_layer_dense_and_the_report_says_why()
    {
        using var compressed = TinyLitCompression.Run(Recipe.Parse("""
            modifiers:
              - method: svd
                targets: [Linear]
                ignore: [lm_head]
                rank: 100
            """, "rank-100", "test.yaml"), output: null);
        var layers = compressed.Result.Layers.Where(l => l.Module.StartsWith("model.layers.0.", StringComparison.Ordinal)).ToList();
        // Break-even ranks: q/o 256×256 → 128, k/v 128×256 → 85.3, gate/up/down 768×256 → 192.
        foreach (var l in layers)
        {
            bool kv = l.Module.EndsWith("k_proj", StringComparison.Ordinal) || l.Module.EndsWith("v_proj", StringComparison.Ordinal);
            if (kv) Assert.Equal("kept dense: rank 100 ≥ mn/(m + n) = 85.3 would store more than the matrix", l.Scheme);
            else Assert.Equal("low-rank r=100 F16", l.Scheme);
        }
        Assert.Equal(7, layers.Count);
    }

    [Fact]
    public void A_calibration_set_too_small_for_the_whitening_is_regularized_not_a_crash()
    {
        using var model = ModelLoader.Load(SharedData.TinyLit);
        using var transformer = new Transformer(model);
        // 24 tokens against 768 inputs of down_proj: XXᵀ has rank ≤ 24 and its Cholesky factorization needs the dampening raised.
        var calibration = CalibrationSet.FromFile(SharedData.Corpus("tinylit_calib.txt"), model.RequireTokenizer(), 1, 24, seed: 0);
        var result = new SequentialPipeline(model, transformer, Recipe.Load("svd-llm-40")).Run(calibration);
        Assert.All(result.Layers, l => Assert.StartsWith("low-rank r=", l.Scheme));
        Assert.All(result.Layers, l => Assert.True(double.IsFinite(l.RelativeOutputError), l.Module));
    }

    [Theory]
    [InlineData("rank: 0", "rank: 0 must be positive")]
    [InlineData("ratio: 1.5", "ratio: 1.5 is outside (0, 1)")]
    [InlineData("ratio: 0", "ratio: 0 is outside (0, 1)")]
    [InlineData("rank: 300", "rank 300 is larger than min(m, n) = 256")]
    [InlineData("rank: 8\n    ratio: 0.2", "give either ratio")]
    [InlineData("rank: 8\n    allocation: spectrum", "allocation: spectrum shares a parameter budget")]
    public void Bad_ranks_and_ratios_are_one_line_errors(string parameters, string message)
    {
        using var dir = new TempDir();
        string recipe = dir.File("recipe.yaml");
        File.WriteAllText(recipe, $"modifiers:\n  - method: svd-llm\n    targets: [Linear]\n    {parameters}\n");
        var result = CliTests.Run("compress", SharedData.TinyLit, "--recipe", recipe, "--calib", SharedData.Corpus("tinylit_calib.txt"),
            "--samples", "2", "--seq-len", "32", "--out", dir.File("out"));
        CliTests.AssertUserError(result, message);
        Assert.False(Directory.Exists(dir.File("out")));
    }
}
