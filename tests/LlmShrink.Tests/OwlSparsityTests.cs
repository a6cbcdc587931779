using LlmShrink.Compression;
using LlmShrink.Compression.Methods;
using LlmShrink.Compression.Recipes;
using LlmShrink.Model;
using Xunit;
using Xunit.Abstractions;

namespace LlmShrink.Tests;

/// <summary>
/// OWL per-block sparsity (<c>allocation: owl</c>, <see cref="OwlAllocation"/>) on tinylit-8m: the sparsities the pipeline
/// prunes at, what they cost on held-out text against uniform pruning, and the recipe errors.
/// </summary>
public class OwlSparsityTests(ITestOutputHelper output)
{
    private static string OwlRecipe(string method, string sparsity, string extra = "") =>
        $"modifiers:\n  - method: {method}\n    sparsity: {sparsity}\n    allocation: owl\n{extra}";

    /// <summary>
    /// Wanda at 70 % with OWL (8 × 128 calibration tokens): the written blocks are pruned at the allocated sparsities (to
    /// a whole number of weights per row), which average 70 %, stay within 70 % ± λ with one block on a bound, and order
    /// inversely to the blocks' outlier ratios; each layer's report line names its block's sparsity.
    /// </summary>
    [Fact]
    public void Blocks_are_pruned_at_owl_sparsities_that_average_the_target_and_spare_outlier_rich_blocks()
    {
        const double s = 0.7, lambda = OwlParameters.DefaultLambda;
        using var dir = new TempDir();
        var recipe = CompressionTests.LoadRecipe(OwlRecipe("wanda", "0.7"));
        IReadOnlyList<LayerReport> reports;
        using (var compressed = TinyLitCompression.Run(recipe, dir.File("out"))) reports = compressed.Result.Layers;
        var owl = Assert.IsType<WandaMethod>(recipe.Modifiers.Single().Method).Owl!;

        using var written = ModelLoader.Load(dir.File("out"));
        int blocks = written.Config.NumLayers;
        Assert.Equal(Enumerable.Range(0, blocks), owl.Sparsities.Keys.Order());
        var measured = new double[blocks];
        int narrowest = int.MaxValue;
        for (int layer = 0; layer < blocks; layer++)
        {
            long zeros = 0, weights = 0;
            foreach (var role in LinearRoles.All)
            {
                var tensor = written.Weights.Get(LinearRoles.ModulePath(layer, role) + ".weight");
                var w = tensor.ToFloatArray();
                zeros += w.Count(v => v == 0);
                weights += w.Length;
                narrowest = Math.Min(narrowest, (int)tensor.Columns);
            }
            measured[layer] = (double)zeros / weights;
            output.WriteLine($"block {layer}: outlier ratio {owl.OutlierRatios[layer]:P3}, sparsity {owl.Sparsities[layer]:P2} allocated, {measured[layer]:P2} pruned");
        }
        // round(S_l · columns) weights go from every row: off by at most half a weight of the narrowest row.
        double rounding = 0.5 / narrowest;
        for (int layer = 0; layer < blocks; layer++) Assert.InRange(measured[layer], owl.Sparsities[layer] - rounding, owl.Sparsities[layer] + rounding);
        Assert.Equal(s, owl.Sparsities.Values.Average(), 12);
        Assert.InRange(measured.Average(), s - rounding, s + rounding);
        Assert.All(owl.Sparsities.Values, sl => Assert.InRange(sl, s - lambda - 1e-12, s + lambda + 1e-12));
        Assert.Equal(lambda, owl.Sparsities.Values.Max(sl => Math.Abs(sl - s)), 12); // the block furthest from the mean ratio sits on a bound
        var byRatio = Enumerable.Range(0, blocks).OrderBy(l => owl.OutlierRatios[l]).ToArray();
        for (int k = 1; k < blocks; k++)
            Assert.True(owl.Sparsities[byRatio[k]] <= owl.Sparsities[byRatio[k - 1]] + 1e-12,
                $"block {byRatio[k]} has more outliers than block {byRatio[k - 1]} but a higher sparsity");
        Assert.True(owl.OutlierRatios.Values.Max() > owl.OutlierRatios.Values.Min(), "every block has the same outlier ratio");

        Assert.Equal(LinearRoles.All.Length * blocks, reports.Count);
        Assert.All(reports, r =>
        {
            int layer = int.Parse(r.Module.Split('.')[2]);
            Assert.EndsWith($", {owl.Sparsities[layer] * 100:0.0} % unstructured (OWL: {owl.OutlierRatios[layer] * 100:0.000} % outliers)", r.Scheme);
        });
    }

    /// <summary>
    /// The allocation is a property of the float model, not of the method that prunes: magnitude and SparseGPT with OWL
    /// get exactly Wanda's per-block sparsities (the survey counts Wanda-score outliers of the uncompressed blocks).
    /// </summary>
    [Fact]
    public void Every_pruning_method_gets_the_float_models_allocation()
    {
        OwlAllocation Allocation(string method)
        {
            var recipe = CompressionTests.LoadRecipe(OwlRecipe(method, "0.6", "    owl_lambda: 0.1\n    owl_m: 7\n"));
            using (TinyLitCompression.Run(recipe, output: null)) { }
            var pruner = recipe.Modifiers.Single().Method;
            return pruner switch
            {
                WandaMethod w => w.Owl!,
                SparseGptMethod g => g.Owl!,
                MagnitudeMethod m => m.Owl!,
                _ => throw new InvalidOperationException(method),
            };
        }
        var wanda = Allocation("wanda");
        Assert.Equal(0.1, wanda.Sparsities.Values.Max(sl => Math.Abs(sl - 0.6)), 12);
        Assert.Equal(wanda.Sparsities, Allocation("sparsegpt").Sparsities);
        Assert.Equal(wanda.Sparsities, Allocation("magnitude").Sparsities);
    }

    /// <summary>
    /// λ = 0 gives every block the target: the run must then be uniform pruning exactly — the survey runs the calibration
    /// through the float blocks on the pipeline's own hidden states and re-embeds them, and nothing of it may leak into the
    /// compressed model.
    /// </summary>
    [Fact]
    public void Owl_with_lambda_zero_is_uniform_pruning_bit_for_bit()
    {
        using var owl = TinyLitCompression.Run(CompressionTests.LoadRecipe(OwlRecipe("wanda", "0.7", "    owl_lambda: 0\n")), output: null);
        using var uniform = TinyLitCompression.Run(CompressionTests.LoadRecipe("modifiers:\n  - method: wanda\n    sparsity: 0.7\n"), output: null);
        var tokens = owl.Model.RequireTokenizer().Encode("Once upon a time the old sailor told the children a story about the sea.", addBos: true);
        float[] Logits(Transformer t)
        {
            var logits = new float[tokens.Length * t.Config.VocabSize];
            t.Forward(tokens, t.NewCache(tokens.Length), logits);
            return logits;
        }
        Assert.Equal(Logits(uniform.Transformer), Logits(owl.Transformer));
        Assert.All(owl.Result.Layers, r => Assert.Contains(", 70.0 % unstructured (OWL: ", r.Scheme));
    }

    [Fact]
    public void Owl_presets_and_keys_round_trip_through_recipe_yaml()
    {
        foreach (var (preset, method) in new[] { ("wanda-owl-70", "wanda"), ("sparsegpt-owl-70", "sparsegpt") })
        {
            var modifier = Recipe.Load(preset).Modifiers.Single();
            Assert.Equal((method, "owl", "0.7"), (modifier.Spec.Method, modifier.Spec.Parameters["allocation"], modifier.Spec.Parameters["sparsity"]));
            Assert.True(modifier.Method.SurveysModel);
        }
        Assert.False(Recipe.Load("wanda-50").Modifiers.Single().Method.SurveysModel); // uniform stays the default
        var built = Recipe.From("owl", [new ModifierSpec("magnitude").With("sparsity", 0.6).With("allocation", "owl").With("owl_lambda", 0.05).With("owl_m", 7)]);
        var again = Recipe.Parse(built.Text, "again", "again.yaml").Modifiers.Single();
        Assert.Equal(built.Modifiers.Single().Spec.Parameters.OrderBy(kv => kv.Key), again.Spec.Parameters.OrderBy(kv => kv.Key));
        Assert.True(again.Method.SurveysModel);
    }

    [Theory]
    [InlineData("wanda", "pattern: \"2:4\"\n    allocation: owl", "allocation: owl gives each block its own sparsity, but pattern 2:4 fixes every layer's at 0.5; use pattern: unstructured")]
    [InlineData("sparsegpt", "sparsity: 0.5\n    allocation: owl\n    owl_lambda: 0.5", "owl_lambda: 0.5 must be in [0, 0.5)")]
    [InlineData("wanda", "sparsity: 0.9\n    allocation: owl\n    owl_lambda: 0.1", "keep sparsity + owl_lambda below 1")]
    [InlineData("magnitude", "sparsity: 0.7\n    allocation: owl\n    owl_lambda: -0.01", "owl_lambda: -0.01 must be in [0, 0.7)")]
    [InlineData("wanda", "sparsity: 0.7\n    allocation: owl\n    owl_m: 0", "owl_m: 0 must be positive")]
    [InlineData("wanda", "sparsity: 0.7\n    owl_lambda: 0.05", "owl_lambda applies only with allocation: owl")]
    [InlineData("wanda", "sparsity: 0.7\n    allocation: layerwise", "allocation: 'layerwise' is not one of uniform, owl")]
    public void Bad_owl_recipes_are_one_line_errors_and_write_nothing(string method, string parameters, string message)
    {
        using var dir = new TempDir();
        string recipe = dir.File("recipe.yaml");
        File.WriteAllText(recipe, $"modifiers:\n  - method: {method}\n    {parameters}\n");
        var result = CliTests.Run("compress", SharedData.TinyLit, "--recipe", recipe, "--calib", SharedData.Corpus("tinylit_calib.txt"),
            "--samples", "2", "--seq-len", "32", "--out", dir.File("out"));
        CliTests.AssertUserError(result, message);
        Assert.Contains("recipe.yaml", result.Stderr);
        Assert.False(Directory.Exists(dir.File("out")));
    }
}
