using LlmShrink.Compression;
using LlmShrink.Compression.Recipes;
using LlmShrink.Export;
using LlmShrink.Formats;
using LlmShrink.Model;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>
/// The orderings the pruning methods guarantee on tinylit-8m (held-out text, KL against the float model), and how pruned
/// layers are stored. Each figure in a comment was measured with the calibration these tests use (32 samples × 256 tokens, 40 chunks).
/// </summary>
public class PruningMethodTests
{
    /// <summary>Calibration samples (× 256 tokens) and evaluation chunks (× 256 tokens): a quarter and a third of the quantization tests' to keep the suite short.</summary>
    private const int Samples = 32, Chunks = 40;

    [Fact]
    public void Half_sparsity_sparsegpt_and_wanda_lose_less_than_magnitude()
    {
        var magnitude = CompressionTests.Compress("magnitude-50", Samples, Chunks);
        var wanda = CompressionTests.Compress("wanda-50", Samples, Chunks);
        var sparsegpt = CompressionTests.Compress("sparsegpt-50", Samples, Chunks);
        Assert.True(wanda.Kl < magnitude.Kl && wanda.Ppl < magnitude.Ppl, $"wanda {wanda} vs magnitude {magnitude}");
        // SparseGPT's KL is well below magnitude's (measured 0.0210 vs 0.0393), but on this 8M-parameter model its perplexity
        // is not (77.66 vs 77.44, float 76.24). Perplexity does not rank closeness to the original here: on texts the model
        // was not trained on, magnitude pruning beats the float model itself (150 chunks of 256, 128 calibration samples:
        // tinyshakespeare 402.1 magnitude vs 418.2 float, sotu 179.3 vs 179.8), a gain no reconstruction of the original
        // can make. SparseGPT's perplexity is above
        // magnitude's on all three texts (tinylit_eval 86.41 vs 85.94, tinyshakespeare 416.5 vs 402.1, sotu 186.2 vs
        // 179.3) while its KL to the float model is 28–39 % lower and its top-1 agreement 4–5 points higher on each of
        // them. So the orderings asserted for SparseGPT are the two that measure fidelity to the original, which is what
        // each layer's objective approximates: KL, and top-1 agreement (88.0 % vs 83.0 % here).
        Assert.True(sparsegpt.Kl < 0.75 * magnitude.Kl, $"sparsegpt {sparsegpt} vs magnitude {magnitude}");
        Assert.True(sparsegpt.Top1 > magnitude.Top1 + 2, $"sparsegpt {sparsegpt} vs magnitude {magnitude}");
    }

    [Fact]
    public void Two_of_four_sparsegpt_loses_less_than_two_of_four_magnitude()
    {
        var magnitude = CompressionTests.Compress("""
            modifiers:
              - method: magnitude
                pattern: "2:4"
            """, Samples, Chunks);
        var sparsegpt = CompressionTests.Compress("sparsegpt-2of4", Samples, Chunks);
        Assert.True(sparsegpt.Kl < magnitude.Kl && sparsegpt.Ppl < magnitude.Ppl, $"sparsegpt {sparsegpt} vs magnitude {magnitude}");
    }

    [Fact]
    public void Joint_two_of_four_and_four_bit_beats_pruning_then_rounding()
    {
        var joint = CompressionTests.Compress("sparsegpt-2of4-w4g128", Samples, Chunks);
        var separate = CompressionTests.Compress("""
            modifiers:
              - method: sparsegpt
                pattern: "2:4"
              - method: rtn
                bits: 4
                group_size: 128
            """, Samples, Chunks);
        // The margin is small against calibration noise: over calibration seeds 0–4 (128 × 256) the held-out KL averaged
        // 0.0588 joint vs 0.0592 separate with ±0.0015 seed to seed (seed 0 alone had separate ahead), while the layers'
        // own output errors favour the joint pass in all 56 block linears (summed relative error 2.090 vs 2.208). This
        // calibration (32 × 256, seed 0) is one draw of that comparison, not tuned to pass it.
        Assert.True(joint.Kl < separate.Kl, $"joint {joint} vs sparsegpt then RTN {separate}");
    }

    [Fact]
    public void A_pruned_layer_keeps_the_checkpoints_float_type_and_its_zeros()
    {
        using var dir = new TempDir();
        using (var source = ModelLoader.Load(SharedData.TinyLit)) SafetensorsExporter.Export(source, TensorType.BF16, dir.File("bf16"));
        CompressionJob.Run(new CompressionRequest(dir.File("bf16"), "wanda-2of4", SharedData.Corpus("tinylit_calib.txt"), Samples: 4, SequenceLength: 64, Seed: 0, dir.File("out")));

        using var pruned = ModelLoader.Load(dir.File("out"));
        var down = pruned.Weights.Get(TensorNames.Layer(3, TensorNames.Down));
        Assert.Equal(TensorType.BF16, down.Type);
        var w = down.ToFloatArray();
        int columns = (int)down.Columns;
        for (int i = 0; i < w.Length; i += 4)
            Assert.Equal(2, w.AsSpan(i, 4).ToArray().Count(v => v != 0)); // exactly 2 of every 4 consecutive inputs of a row
        Assert.Equal(0, columns % 4);
        Assert.Null(System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(dir.File("out/config.json")))!["quantization_config"]);
        Assert.Contains("2:4", File.ReadAllText(dir.File("out/report.md")));
    }

    [Fact]
    public void A_two_of_four_four_bit_checkpoint_stores_only_kept_codes_and_reloads_identically()
    {
        using var dir = new TempDir();
        using var compressed = TinyLitCompression.Run(Recipe.Load("sparsegpt-2of4-w4g128"), dir.File("out"));
        Assert.All(compressed.Transformer.Blocks, b => Assert.All(b.Linears, l => Assert.IsType<Sparse24Linear>(l)));
        // 2 codes of 4 bits and 2 places of 2 bits per 4 inputs, an F16 scale and a U8 zero per 128 inputs of a row.
        Assert.Equal(3 + 24.0 / 128, compressed.Result.BitsPerWeight, 9);
        TinyLitCompression.AssertReloadsIdentically(compressed.Transformer, dir.File("out"));

        using var written = ModelLoader.Load(dir.File("out"));
        Assert.Equal(TensorType.U8, written.Weights.Get("model.layers.2.mlp.down_proj.sparse24_codes").Type);
        foreach (var role in LinearRoles.All)
        {
            string module = LinearRoles.ModulePath(2, role);
            var (_, keep) = Representations.Sparse24Representation.Read(written.Weights, module).Unpack();
            var w = Representations.ScaledIntegerMatrix.Read(written.Weights, module).Dequantize();
            for (int q = 0; q < keep.Length; q += 4)
            {
                Assert.Equal(2, keep.AsSpan(q, 4).ToArray().Count(k => k)); // exactly 2 of every 4 consecutive inputs of every row
                for (int i = q; i < q + 4; i++) if (!keep[i]) Assert.Equal(0f, w[i]);
            }
        }
        // Exports see the same integers: the GGUF's Q4_0 blocks hold the kept codes exactly.
        var mapped = GgufExporter.Export(written, TensorType.Q4_0, dir.File("out.gguf"))!;
        Assert.All(mapped, m => Assert.Equal(TensorType.Q4_0, m.Type));
    }

    [Theory]
    [InlineData("pattern: \"unstructured\"\n    sparsity: 1", "sparsity: 1 is outside [0, 1)")]
    [InlineData("pattern: \"unstructured\"", "sparsity: required for unstructured pruning")]
    [InlineData("pattern: \"4:2\"", "pattern:")]
    [InlineData("pattern: \"2:4\"\n    sparsity: 0.3", "contradicts pattern 2:4")]
    public void Bad_pruning_recipes_name_the_recipe_and_the_problem(string parameters, string message)
    {
        var e = Assert.Throws<ShrinkException>(() => Recipe.Parse($"modifiers:\n  - method: wanda\n    {parameters}\n", "bad", "bad.yaml"));
        Assert.Contains("bad.yaml", e.Message);
        Assert.Contains(message, e.Message);
    }
}
