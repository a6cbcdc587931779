using LlmShrink.Compression;
using LlmShrink.Compression.Quantization;
using LlmShrink.Export;
using LlmShrink.Formats;
using LlmShrink.Model;
using LlmShrink.Representations;
using LlmShrink.Training;
using Xunit;
using static LlmShrink.Tests.DistillCommandTests;

namespace LlmShrink.Tests;

/// <summary><c>llmshrink distill</c> of GPTQ-packed students: fake quantization in training, the same packing on disk.</summary>
public class DistillQuantizedTests
{
    /// <summary>RTN, 4-bit, asymmetric (so zero points train too), one group per row of the tiny models' 16 or 32 inputs.</summary>
    private const string Rtn4Asymmetric = "modifiers:\n  - method: rtn\n    targets: [Linear]\n    ignore: [lm_head]\n    bits: 4\n    group_size: 32\n    symmetric: false\n";

    private static string QuantizedStudent(TempDir dir)
    {
        string recipe = dir.File("rtn4.yaml"), quantized = dir.File("quantized");
        File.WriteAllText(recipe, Rtn4Asymmetric);
        CompressionJob.Run(new CompressionRequest(RandomFolder(dir, "student", 2), recipe, SharedData.Corpus("tinylit_calib.txt"), Samples: 2, SequenceLength: 16, Seed: 0, quantized));
        return quantized;
    }

    private static IEnumerable<string> BlockModules(ModelConfig c) =>
        Enumerable.Range(0, c.NumLayers).SelectMany(l => LinearRoles.All.Select(role => LinearRoles.ModulePath(l, role)));

    private static (string Output, string Stderr) Distill(TempDir dir, string student, string name, params string[] more)
    {
        string output = dir.File(name);
        var (code, _, stderr) = CliTests.Run(["distill", "--teacher", RandomFolder(dir, name + "-teacher", 1), "--student", student,
            "--data", SharedData.Corpus("tinylit_calib.txt"), "--steps", "3", "--batch", "2", "--seq-len", "16", "--lr", "1e-2", "--warmup", "0", "--out", output, .. more]);
        Assert.True(code == 0, stderr);
        return (output, stderr);
    }

    /// <summary>
    /// Weights and scales (the default): the written folder has every block linear GPTQ-packed again with the stored bits,
    /// group count and g_idx, config.json says so, the importance matrix a GGUF export weights its re-fit by comes along, codes and scales have moved, and the folder runs.
    /// --latent-lr 0.5 (grid steps) so that codes change within 3 steps; at the default 1e-2 they need ~50 steps of
    /// consistent push. (Zero points rarely move in 3 steps: only clamped weights pull on them, and a latent zero must travel half a code.)
    /// </summary>
    [Fact]
    public void A_quantized_student_is_written_back_gptq_packed_and_runs()
    {
        using var dir = new TempDir();
        string student = QuantizedStudent(dir);
        var (output, stderr) = Distill(dir, student, "distilled", "--latent-lr", "0.5");
        Assert.Contains("14 quantized tensors train weights and scales", stderr);
        Assert.Contains("\"quant_method\": \"gptq\"", File.ReadAllText(Path.Combine(output, "config.json")));
        Assert.Contains("re-packed as GPTQ", File.ReadAllText(Path.Combine(output, "report.md")));
        Assert.Equal(File.ReadAllBytes(Path.Combine(student, CompressedCheckpointWriter.ImportanceFile)), File.ReadAllBytes(Path.Combine(output, CompressedCheckpointWriter.ImportanceFile)));

        using var before = ModelLoader.Load(student);
        using var after = ModelLoader.Load(output);
        bool codes = false, scales = false;
        foreach (string module in BlockModules(before.Config))
        {
            Assert.IsType<GptqRepresentation>(LayerRepresentations.Find(after.Weights, module));
            QuantizedMatrix b = GptqRepresentation.Read(before.Weights, module), a = GptqRepresentation.Read(after.Weights, module);
            Assert.Equal((b.Scheme.Bits, b.GroupCount), (a.Scheme.Bits, a.GroupCount));
            Assert.Equal(b.GroupIndex, a.GroupIndex);
            codes |= !a.Codes.SequenceEqual(b.Codes);
            scales |= !a.Scales.SequenceEqual(b.Scales);
        }
        Assert.True(codes && scales, $"moved: codes {codes}, scales {scales}");
        using var transformer = new Transformer(after);
        var logits = new float[3 * after.Config.VocabSize];
        transformer.Forward([1, 100, 200], transformer.NewCache(3), logits);
        Assert.All(logits, v => Assert.True(float.IsFinite(v)));
    }

    /// <summary>--quantized-train scales (PEQA): every integer code and zero point is written back unchanged, the scales are not.</summary>
    [Fact]
    public void Scales_only_training_leaves_every_code_and_zero_point_unchanged()
    {
        using var dir = new TempDir();
        string student = QuantizedStudent(dir);
        var (output, stderr) = Distill(dir, student, "peqa", "--quantized-train", "scales");
        Assert.Contains("14 quantized tensors train their scales (codes frozen)", stderr);

        using var before = ModelLoader.Load(student);
        using var after = ModelLoader.Load(output);
        bool scales = false;
        foreach (string module in BlockModules(before.Config))
        {
            QuantizedMatrix b = GptqRepresentation.Read(before.Weights, module), a = GptqRepresentation.Read(after.Weights, module);
            Assert.Equal(b.Codes, a.Codes);
            Assert.Equal(b.Zeros, a.Zeros);
            scales |= !a.Scales.SequenceEqual(b.Scales);
        }
        Assert.True(scales, "no scale moved");
    }

    /// <summary>
    /// tinylit-8m with every block linear RTN-quantized to 3-bit g128 (symmetric), loaded as a student the way a folder is,
    /// distilled from tinylit-8m on one fixed batch of 2 × 32 tokens: in both modes the forward KL falls at every one of
    /// 5 steps and ends below 90 % of where it started.
    /// </summary>
    [Theory]
    [InlineData(QuantizedTraining.WeightsAndScales, 1e-4f)]
    [InlineData(QuantizedTraining.Scales, 1e-4f)]
    public void The_distillation_loss_of_a_quantized_student_goes_down(QuantizedTraining mode, float lr)
    {
        using var teacherModel = ModelLoader.Load(SharedData.TinyLit);
        using var studentModel = ModelLoader.Load(SharedData.TinyLit);
        var student = TrainableModel.FromLoaded(studentModel);
        var scheme = QuantScheme.Grouped(3, 128, symmetric: true);
        foreach (var p in student.Blocks.SelectMany(b => new[] { b.Q, b.K, b.V, b.O, b.Gate, b.Up, b.Down }))
        {
            var stored = Rtn.Quantize(p.Value, p.Rows, p.Columns, scheme);
            var quantization = new FakeQuantization(p.Name, stored, mode);
            quantization.InitialLatent().CopyTo(p.Value, 0);
            p.Quantize(quantization);
        }
        var tokens = CalibrationSet.FromFile(SharedData.Corpus("tinylit_calib.txt"), studentModel.RequireTokenizer(), 2, 32, 7).Samples.SelectMany(s => s).ToArray();
        using var transformer = new Transformer(teacherModel);
        var losses = Distillation.Run(student, new TeacherLogits(transformer), _ => tokens,
            new DistillationOptions { Steps = 5, Batch = 2, SeqLen = 32, Lr = lr, Warmup = 0 });
        for (int s = 1; s < losses.Count; s++) Assert.True(losses[s] < losses[s - 1], $"step {s + 1}: {losses[s]} ≥ {losses[s - 1]}");
        Assert.True(losses[^1] < 0.9 * losses[0], $"{losses[0]} → {losses[^1]}");
    }
}
