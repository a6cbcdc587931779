using LlmShrink.Cli.Commands;
using System.Text.Json.Nodes;
using LlmShrink.Compression.LowRank;
using LlmShrink.Compression.Recipes;
using LlmShrink.Export;
using LlmShrink.Formats;
using LlmShrink.Formats.Gguf;
using LlmShrink.Formats.Safetensors;
using LlmShrink.Kernels;
using LlmShrink.LinearAlgebra;
using LlmShrink.Model;
using LlmShrink.Representations;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>tinylit-8m compressed once with w3g128-gptq-eora32 into a folder, shared by the tests of <see cref="EoraTests"/>.</summary>
public sealed class EoraFolder : IDisposable
{
    private readonly TempDir _dir = new();
    public string Path => _dir.File("w3g128-gptq-eora32");
    internal TinyLitCompression Compressed { get; }

    public EoraFolder() => Compressed = TinyLitCompression.Run(Recipe.Load("w3g128-gptq-eora32"), Path);

    public void Dispose()
    {
        Compressed.Dispose();
        _dir.Dispose();
    }
}

/// <summary>
/// EoRA (issue 13): the whitened truncation of the quantization residual, the compensated checkpoint, and its two adapter
/// exports — PEFT's layout applied by hand on the GPTQ export, and llama.cpp's LoRA GGUF applied by hand on the GGUF export.
/// </summary>
public class EoraTests(EoraFolder folder) : IClassFixture<EoraFolder>
{
    private const string Q = "model.layers.2.self_attn.q_proj", Down = "model.layers.5.mlp.down_proj";

    /// <summary>
    /// The done-when figure, on held-out text with the calibration of <see cref="LowRankTests"/> (32 × 256 tokens, 40
    /// chunks of 256, llama.cpp protocol). Measured: w3g128-gptq KL 1.108e-2 (perplexity 76.91), w3g128-gptq-eora32 KL
    /// 7.25e-3 (76.74), i.e. 0.65×; rank 8: 9.60e-3 (77.15), rank 16: 8.76e-3 (77.05), rank 32 with F32 factors: 7.13e-3
    /// (76.85); F32 model 76.24. Perplexity over 40 chunks moves by more than these differences (rank 8 and 16 lower the
    /// KL but not the perplexity), so only the KL is asserted.
    /// </summary>
    [Fact]
    public void A_rank_32_compensation_removes_at_least_a_quarter_of_3_bit_gptqs_kl()
    {
        var gptq = CompressionTests.Compress("w3g128-gptq", 32, 40);
        var eora = CompressionTests.Compress("w3g128-gptq-eora32", 32, 40);
        Assert.True(eora.Kl <= 0.75 * gptq.Kl, $"KL eora32 {eora.Kl:E3} vs gptq {gptq.Kl:E3} ({eora.Kl / gptq.Kl:F2}×); perplexity {eora.Ppl:F3} vs {gptq.Ppl:F3}");
    }

    /// <summary>
    /// A weight and its rounding to a coarse grid (the residual's structure does not matter for the identity), inputs whose
    /// channels differ in scale and correlate: ‖(ΔW − B·A)X‖² is exactly the whitened spectrum's dropped energy, below
    /// ‖ΔW·X‖², and no worse than truncating ΔW's own SVD. EoRA's eigenspace projection T = QΛ^½ (XXᵀ = QΛQᵀ) gives the
    /// same spectrum and the same B·A as the Cholesky whitening the method uses.
    /// </summary>
    [Fact]
    public void The_whitened_truncation_of_the_residual_loses_exactly_its_dropped_energy_as_the_eigenspace_projection_does()
    {
        var random = new Random(13);
        const int m = 24, n = 40, tokens = 300;
        var w = LowRankTests.RandomMatrix(random, m, n);
        const float step = 0.3f;
        var residual = Array.ConvertAll(w, v => v - step * MathF.Round(v / step));
        var x = LowRankTests.CorrelatedInputs(random, tokens, n);
        var h = LowRankTests.Gram(x, tokens, n);
        var whitened = WeightSpectrum.Of(residual, m, n, InputTransform.Whitening(h, n, dampening: 0));
        var eigenspace = WeightSpectrum.Of(residual, m, n, new EigenspaceProjection(h, n));
        var plain = WeightSpectrum.Of(residual, m, n, InputTransform.Identity(n));
        double uncompensated = LowRankTests.OutputError(residual, new LowRankFactors(m, n, new float[m], new float[n]), x, tokens);
        Assert.Equal(whitened.Energy, uncompensated, uncompensated * 1e-9);
        for (int i = 0; i < m; i++) Assert.Equal(whitened.SingularValues[i], eigenspace.SingularValues[i], whitened.SingularValues[0] * 1e-9);
        foreach (int rank in new[] { 1, 4, 12, 20 })
        {
            var f = whitened.Truncate(rank);
            double measured = LowRankTests.OutputError(residual, f, x, tokens);
            Assert.Equal(whitened.TruncationLoss(rank), measured, whitened.Energy * 2e-6);
            Assert.True(measured < uncompensated, $"rank {rank}");
            Assert.True(measured <= LowRankTests.OutputError(residual, plain.Truncate(rank), x, tokens) * (1 + 1e-6), $"rank {rank}");
            var g = eigenspace.Truncate(rank);
            var product = LowRankRepresentation.Multiply(f.U, f.V, m, rank, n);
            var eigenProduct = LowRankRepresentation.Multiply(g.U, g.V, m, rank, n);
            for (int i = 0; i < product.Length; i++) Assert.Equal(product[i], eigenProduct[i], 1e-4);
        }
    }

    /// <summary>EoRA's own coordinates: T = Q·Λ^½ with XXᵀ = QΛQᵀ, so T·Tᵀ = XXᵀ; T⁻¹ = Λ^-½·Qᵀ.</summary>
    private sealed class EigenspaceProjection : InputTransform
    {
        private readonly double[] _t, _inverse; // row-major [n, n]
        private readonly int _n;

        public EigenspaceProjection(double[] h, int n)
        {
            var (values, vectors) = SymmetricEigen.Decompose(h, n); // vectors as rows: Q[i, k] = vectors[k, i]
            _n = n;
            _t = new double[n * n];
            _inverse = new double[n * n];
            for (int i = 0; i < n; i++)
                for (int k = 0; k < n; k++)
                {
                    _t[i * n + k] = vectors[k * n + i] * Math.Sqrt(values[k]);
                    _inverse[k * n + i] = vectors[k * n + i] / Math.Sqrt(values[k]);
                }
        }

        public override double[] Apply(float[] w, int rows) => Multiply(Array.ConvertAll(w, v => (double)v), rows, _t);

        public override void SolveRows(double[] v, int rows) => Multiply(v, rows, _inverse).CopyTo(v, 0);

        private double[] Multiply(double[] a, int rows, double[] right)
        {
            var product = new double[rows * _n];
            for (int r = 0; r < rows; r++)
                for (int k = 0; k < _n; k++)
                    for (int j = 0; j < _n; j++) product[r * _n + j] += a[r * _n + k] * right[k * _n + j];
            return product;
        }
    }

    [Fact]
    public void The_compensated_folder_reloads_identically_and_gptq_loaders_see_a_plain_gptq_checkpoint()
    {
        Assert.All(folder.Compressed.Result.Layers.Where(l => l.Method == "eora"), l => Assert.Equal("3-bit sym g128 + EoRA r=32 F16", l.Scheme));
        // The compensation lowers every layer's output error against the weights GPTQ started from.
        var byModule = folder.Compressed.Result.Layers.GroupBy(l => l.Module);
        Assert.All(byModule, g => Assert.True(g.Single(l => l.Method == "eora").RelativeOutputError < g.Single(l => l.Method == "gptq").RelativeOutputError, g.Key));
        TinyLitCompression.AssertReloadsIdentically(folder.Compressed.Transformer, folder.Path);

        var index = JsonNode.Parse(File.ReadAllText(System.IO.Path.Combine(folder.Path, SafetensorsIndex.FileName)))!["weight_map"]!.AsObject();
        Assert.DoesNotContain(index, e => CompensatedRepresentation.IsFactor(e.Key));
        Assert.Contains(Q + ".qweight", index.Select(e => e.Key));
        var quantization = JsonNode.Parse(File.ReadAllText(System.IO.Path.Combine(folder.Path, "config.json")))!["quantization_config"]!;
        Assert.Equal("gptq", (string)quantization["quant_method"]!);
        Assert.Equal(3, (int)quantization["bits"]!);
        Assert.Null(quantization["dynamic"]);
        using var factors = SafetensorsFile.LoadSet(System.IO.Path.Combine(folder.Path, CompensatedRepresentation.FileName));
        Assert.Equal(8 * 7 * 2, factors.Count);
        Assert.Equal(new long[] { 32, 256 }, factors.Get(Q + ".lora_A.weight").Shape);
        Assert.Equal(new long[] { 256, 32 }, factors.Get(Down + ".lora_B.weight").Shape);
        Assert.Equal(TensorType.F16, factors.Get(Q + ".lora_B.weight").Type);
    }

    [Fact]
    public void The_dense_export_writes_base_plus_b_times_a()
    {
        using var dir = new TempDir();
        using var model = ModelLoader.Load(folder.Path);
        SafetensorsExporter.Export(model, TensorType.F32, dir.File("dense"));
        using var dense = ModelLoader.Load(dir.File("dense"));
        Assert.DoesNotContain(dense.Weights.Names, CompensatedRepresentation.IsFactor);
        foreach (string module in new[] { Q, Down })
        {
            var gptqBase = ScaledIntegerMatrix.FromGrid(GptqRepresentation.Read(model.Weights, module), "").Dequantize();
            var (a, b) = CompensatedRepresentation.Instance.Factors(model.Weights, module);
            var correction = LowRankRepresentation.Multiply(b.ToFloatArray(), a.ToFloatArray(), (int)b.Shape[0], 32, (int)a.Shape[1]);
            var written = dense.Weights.Get(module + ".weight").ToFloatArray();
            for (int i = 0; i < written.Length; i++) Assert.Equal(gptqBase[i] + correction[i], written[i], 1e-6);
        }
    }

    /// <summary>
    /// PEFT's layout, applied by hand as peft's LoRA Linear does on top of the GPTQ export's dequantized weights:
    /// y = W·x + (lora_alpha / r)·B·(A·x), with A = base_model.model.&lt;module&gt;.lora_A.weight [r, in] and B = .lora_B.weight
    /// [out, r]. It must give what our compensated layer computes.
    /// </summary>
    [Fact]
    public void The_peft_adapter_applied_by_hand_on_the_gptq_export_reproduces_the_compensated_layer()
    {
        using var dir = new TempDir();
        string peft = dir.File("peft"), gptq = dir.File("gptq");
        using var model = ModelLoader.Load(folder.Path);
        PeftLoraExporter.Export(model, peft);
        GptqSafetensorsExporter.Export(model, gptq);

        var config = JsonNode.Parse(File.ReadAllText(System.IO.Path.Combine(peft, "adapter_config.json")))!;
        Assert.Equal("LORA", (string)config["peft_type"]!);
        Assert.Equal("CAUSAL_LM", (string)config["task_type"]!);
        Assert.Equal("none", (string)config["bias"]!);
        Assert.False((bool)config["fan_in_fan_out"]!);
        Assert.False((bool)config["use_rslora"]!);
        Assert.Equal(System.IO.Path.GetFullPath(folder.Path), (string)config["base_model_name_or_path"]!);
        Assert.Equal(new[] { "down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj" }, config["target_modules"]!.AsArray().Select(t => (string)t!));
        int r = (int)config["r"]!;
        double scaling = (double)config["lora_alpha"]! / r;
        Assert.Equal((32, 1.0), (r, scaling));

        using var adapter = SafetensorsFile.LoadSet(System.IO.Path.Combine(peft, "adapter_model.safetensors"));
        Assert.Equal(8 * 7 * 2, adapter.Count);
        using var gptqModel = ModelLoader.Load(gptq);
        Assert.DoesNotContain(gptqModel.Weights.Names, CompensatedRepresentation.IsFactor);
        Assert.False(File.Exists(System.IO.Path.Combine(gptq, CompensatedRepresentation.FileName)));
        Assert.All(CompensationAdapter.ModulePaths(model.Config).SkipLast(1), module => Assert.IsType<GptqRepresentation>(LayerRepresentations.Find(gptqModel.Weights, module)));

        var random = new Random(7);
        const int tokens = 5;
        foreach (string module in new[] { Q, Down })
        {
            var a = adapter.Get("base_model.model." + module + ".lora_A.weight");
            var b = adapter.Get("base_model.model." + module + ".lora_B.weight");
            int rank = (int)a.Shape[0], inputs = (int)a.Shape[1], outputs = (int)b.Shape[0];
            Assert.Equal(rank, (int)b.Shape[1]);
            var (af, bf) = (a.ToFloatArray(), b.ToFloatArray());
            var w = ScaledIntegerMatrix.Read(gptqModel.Weights, module).Dequantize();
            var x = LowRankTests.RandomMatrix(random, tokens, inputs);

            var ours = new float[tokens * outputs];
            LinearLoader.Load(model.Weights, module, outputs, inputs, null).Apply(x, ours, tokens, WorkerPool.Shared, 0);
            for (int t = 0; t < tokens; t++)
            {
                var ax = new double[rank];
                for (int k = 0; k < rank; k++)
                    for (int i = 0; i < inputs; i++) ax[k] += (double)af[k * inputs + i] * x[t * inputs + i];
                // The GPTQ base runs on int8 activations (decode, and prompts of whole-group layers): each is off by at most
                // max|x|/254, so the base part by Σ|w|·max|x|/254; the adapter's part is float.
                float amax = 0;
                for (int i = 0; i < inputs; i++) amax = Math.Max(amax, Math.Abs(x[t * inputs + i]));
                for (int o = 0; o < outputs; o++)
                {
                    double y = 0, weights = 0;
                    for (int i = 0; i < inputs; i++) { y += (double)w[o * inputs + i] * x[t * inputs + i]; weights += Math.Abs(w[o * inputs + i]); }
                    for (int k = 0; k < rank; k++) y += scaling * bf[o * rank + k] * ax[k];
                    Assert.True(Math.Abs(y - ours[t * outputs + o]) <= weights * amax / 254 + 1e-4, $"{module} y[{t}, {o}] = {ours[t * outputs + o]}, by hand {y}");
                }
            }
        }
    }

    /// <summary>
    /// llama.cpp's LoRA GGUF, read back: the adapter keys llama_adapter_lora_init checks, one lora_a [r, in] / lora_b
    /// [out, r] pair per module under the model tensor's GGUF name, and, applied by hand as llm_build_lora_mm does
    /// (w·x + alpha/r·B·(A·x)) on the F32 GGUF export of the bases, exactly the compensated weights — the q/k rows of
    /// lora_b permuted like the base's.
    /// </summary>
    [Fact]
    public void The_llama_cpp_lora_gguf_applied_by_hand_on_the_gguf_export_gives_the_compensated_weights()
    {
        using var dir = new TempDir();
        string lora = dir.File("adapter.gguf"), baseFile = dir.File("base.gguf");
        using var model = ModelLoader.Load(folder.Path);
        GgufLoraExporter.Export(model, lora);
        GgufExporter.Export(model, TensorType.F32, baseFile);

        using var adapter = GgufFile.Open(lora);
        Assert.Equal("adapter", adapter.Metadata.GetString("general.type"));
        Assert.Equal("lora", adapter.Metadata.GetString("adapter.type"));
        Assert.Equal("llama", adapter.Metadata.GetString("general.architecture"));
        float alpha = adapter.Metadata.GetFloat("adapter.lora.alpha");
        Assert.Equal(32f, alpha);
        Assert.Equal(8 * 7 * 2, adapter.Tensors.Count);
        foreach (string name in new[] { "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down" })
            for (int layer = 0; layer < 8; layer++)
            {
                var a = adapter.FindTensor($"blk.{layer}.{name}.weight.lora_a")!;
                var b = adapter.FindTensor($"blk.{layer}.{name}.weight.lora_b")!;
                Assert.Equal((TensorType.F16, TensorType.F16, 32L, 32L), (a.Type, b.Type, a.Shape[0], b.Shape[1]));
                Assert.Equal(name == "ffn_down" ? 768 : 256, a.Shape[1]);
                Assert.Equal(name is "attn_k" or "attn_v" ? 128 : name is "ffn_gate" or "ffn_up" ? 768 : 256, b.Shape[0]);
            }

        using var bases = GgufFile.Open(baseFile);
        var interleaved = RopeRowOrder.SourceRow(RopeStyle.RotateHalf, RopeStyle.Interleaved, model.Config.HeadDim)!;
        (string Module, string Gguf, Func<long, long> Rows)[] cases =
            [(Q, "blk.2.attn_q.weight", interleaved), ("model.layers.4.self_attn.k_proj", "blk.4.attn_k.weight", interleaved), (Down, "blk.5.ffn_down.weight", r => r)];
        foreach (var (module, ggufName, rows) in cases)
        {
            var a = adapter.FindTensor(ggufName + ".lora_a")!;
            var b = adapter.FindTensor(ggufName + ".lora_b")!;
            int rank = (int)a.Shape[0], inputs = (int)a.Shape[1];
            var applied = bases.FindTensor(ggufName)!.ToFloatArray();
            var correction = LowRankRepresentation.Multiply(b.ToFloatArray(), a.ToFloatArray(), (int)b.Shape[0], rank, inputs);
            var compensated = CompensatedRepresentation.Instance.Multiplied(model.Weights, module)(); // rotate-half rows
            for (int r = 0; r < b.Shape[0]; r++)
                for (int i = 0; i < inputs; i++)
                    Assert.Equal(compensated[rows(r) * inputs + i], applied[r * inputs + i] + alpha / rank * correction[r * inputs + i], 1e-6);
        }
    }

    /// <summary>Ctrl+C, SIGTERM and SIGHUP reach an export as a cancelled token: every format stops and leaves nothing.</summary>
    [Theory]
    [InlineData("gguf", "Q4_K", "model.gguf")]
    [InlineData("safetensors", null, "dense")]
    [InlineData("safetensors-gptq", null, "gptq")]
    [InlineData("peft-lora", null, "adapter")]
    [InlineData("gguf-lora", null, "adapter.gguf")]
    public void An_interrupted_export_leaves_nothing(string format, string? type, string output)
    {
        using var dir = new TempDir();
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => ExportCommand.Run(folder.Path, format, type, null, dir.File(output), null, null, console: TextWriter.Null, cancellation: cancelled.Token));
        Assert.Empty(Directory.EnumerateFileSystemEntries(dir.Path));
    }
}

/// <summary>EoRA's user errors: one line, exit code 2 (these tests redirect the console).</summary>
public class EoraCliTests
{
    [Theory]
    [InlineData("  - method: eora\n    rank: 8\n", "which no earlier modifier quantized")]
    [InlineData("  - method: magnitude\n    sparsity: 0.5\n  - method: eora\n    rank: 8\n", "which no earlier modifier quantized")]
    [InlineData("  - method: gptq\n  - method: eora\n    rank: 0\n", "rank: 0 must be positive")]
    [InlineData("  - method: gptq\n  - method: eora\n", "rank is required")]
    [InlineData("  - method: gptq\n  - method: eora\n    rank: 300\n", "rank 300 is larger than min(m, n) = 256")]
    [InlineData("  - method: gptq\n  - method: eora\n    rank: 8\n  - method: eora\n    rank: 8\n", "twice")]
    public void Bad_eora_recipes_are_one_line_errors(string modifiers, string message)
    {
        using var dir = new TempDir();
        string recipe = dir.File("recipe.yaml");
        File.WriteAllText(recipe, "modifiers:\n" + modifiers);
        var result = CliTests.Run("compress", SharedData.TinyLit, "--recipe", recipe, "--calib", SharedData.Corpus("tinylit_calib.txt"),
            "--samples", "2", "--seq-len", "32", "--out", dir.File("out"));
        CliTests.AssertUserError(result, message);
        Assert.False(Directory.Exists(dir.File("out")));
    }

    /// <summary>Compresses tinylit-8m with <paramref name="modifiers"/> on a tiny calibration set (errors and layouts only).</summary>
    private static string Compress(TempDir dir, string modifiers)
    {
        string recipe = dir.File("recipe.yaml"), output = dir.File("compressed");
        File.WriteAllText(recipe, "modifiers:\n" + modifiers);
        var result = CliTests.Run("compress", SharedData.TinyLit, "--recipe", recipe, "--calib", SharedData.Corpus("tinylit_calib.txt"),
            "--samples", "2", "--seq-len", "32", "--out", output);
        Assert.True(result.ExitCode == 0, result.Stderr);
        return output;
    }

    [Fact]
    public void Exports_that_write_the_bases_say_the_compensation_is_left_out_and_how_to_write_it()
    {
        using var dir = new TempDir();
        string folder = Compress(dir, "  - method: gptq\n    bits: 3\n  - method: eora\n    rank: 4\n");
        var gguf = CliTests.Run("export", folder, "--format", "gguf", "--type", "Q8_0", "--out", dir.File("base.gguf"));
        Assert.Equal(0, gguf.ExitCode);
        Assert.Contains("note: 56 modules are written without their low-rank compensation (EoRA); write it as an adapter with --format gguf-lora", gguf.Stdout);
        var gptq = CliTests.Run("export", folder, "--format", "safetensors-gptq", "--out", dir.File("gptq"));
        Assert.Equal(0, gptq.ExitCode);
        Assert.Contains("--format peft-lora", gptq.Stdout);
        CliTests.AssertUserError(CliTests.Run("export", folder, "--format", "peft-lora", "--type", "F16", "--out", dir.File("adapter")), "--type");
        CliTests.AssertUserError(CliTests.Run("export", folder, "--format", "gguf-lora", "--type", "Q4_0", "--out", dir.File("adapter.gguf")), "--type Q4_0");
    }

    [Fact]
    public void Adapters_name_exactly_the_compensated_modules_and_refuse_several_ranks()
    {
        using var dir = new TempDir();
        string partial = Compress(dir, "  - method: gptq\n  - method: eora\n    targets: ['re:model\\.layers\\.1\\..*', down_proj]\n    rank: 4\n");
        Assert.Equal(0, CliTests.Run("export", partial, "--format", "peft-lora", "--base-model", "org/base", "--out", dir.File("adapter")).ExitCode);
        var config = JsonNode.Parse(File.ReadAllText(dir.File("adapter/adapter_config.json")))!;
        Assert.Equal("org/base", (string)config["base_model_name_or_path"]!);
        // Block 1's seven modules and every block's down_proj: names alone would adapt every q_proj, so a full-match regex.
        string targets = (string)config["target_modules"]!;
        using var model = ModelLoader.Load(partial);
        var paths = CompensationAdapter.ModulePaths(model.Config).ToList();
        Assert.Equal(paths.Where(p => p.StartsWith("model.layers.1.", StringComparison.Ordinal) || p.EndsWith("down_proj", StringComparison.Ordinal)),
            paths.Where(p => System.Text.RegularExpressions.Regex.IsMatch(p, $"^(?:{targets})$")));

        using var mixed = new TempDir();
        string folder = Compress(mixed, "  - method: gptq\n  - method: eora\n    targets: [q_proj]\n    rank: 4\n  - method: eora\n    targets: [k_proj]\n    rank: 8\n");
        CliTests.AssertUserError(CliTests.Run("export", folder, "--format", "gguf-lora", "--out", mixed.File("adapter.gguf")), "compensated at ranks 4, 8");
    }

    [Theory]
    [InlineData("peft-lora", "adapter")]
    [InlineData("gguf-lora", "adapter.gguf")]
    public void An_adapter_export_of_a_model_without_compensation_is_a_one_line_error(string format, string output)
    {
        using var dir = new TempDir();
        CliTests.AssertUserError(CliTests.Run("export", SharedData.TinyLit, "--format", format, "--out", dir.File(output)), "has no low-rank compensation");
        Assert.Empty(Directory.EnumerateFileSystemEntries(dir.Path));
    }
}
