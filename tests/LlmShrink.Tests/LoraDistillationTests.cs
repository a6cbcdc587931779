using System.Text.Json.Nodes;
using LlmShrink.Compression;
using LlmShrink.Model;
using LlmShrink.Representations;
using LlmShrink.Training;
using Xunit;
using static LlmShrink.Tests.DistillCommandTests;

namespace LlmShrink.Tests;

/// <summary><c>llmshrink distill --lora-rank</c> on tiny random models with tinylit-8m's tokenizer: what is frozen, what is written.</summary>
public class LoraDistillationTests
{
    private static readonly string Data = SharedData.Corpus("tinylit_calib.txt");

    private static string[] Args(string teacher, string student, string output, params string[] more) =>
        ["distill", "--teacher", teacher, "--student", student, "--data", Data, "--steps", "3", "--batch", "2", "--seq-len", "16", "--lr", "1e-2", "--warmup", "0", "--out", output, .. more];

    private static IEnumerable<string> BlockLinearNames(ModelConfig c) =>
        Enumerable.Range(0, c.NumLayers).SelectMany(l => LinearRoles.All.Select(role => LinearRoles.ModulePath(l, role) + ".weight"));

    /// <summary>
    /// --lora-keep on a dense student: every tensor of the written model.safetensors is the student's, bit for bit (the base
    /// is frozen), each block linear is now a compensated module (dense base + lora_A/lora_B in compensation.safetensors,
    /// F32) whose correction is nonzero, and the report says what trained.
    /// </summary>
    [Fact]
    public void Kept_adapters_leave_the_frozen_base_unchanged_bit_for_bit()
    {
        using var dir = new TempDir();
        string teacher = RandomFolder(dir, "teacher", 1), student = RandomFolder(dir, "student", 2), output = dir.File("kept");
        var (code, _, stderr) = CliTests.Run(Args(teacher, student, output, "--lora-rank", "4", "--lora-keep"));
        Assert.True(code == 0, stderr);
        Assert.Contains("LoRA r=4 α=8 on 14 modules, the rest frozen", stderr);
        Assert.Contains("adapters kept un-merged", File.ReadAllText(Path.Combine(output, "report.md")));

        using var before = ModelLoader.Load(student);
        using var after = ModelLoader.Load(output);
        foreach (string name in before.Weights.Names)
            Assert.True(before.Weights.Get(name).ToFloatArray().SequenceEqual(after.Weights.Get(name).ToFloatArray()), $"{name} changed");
        foreach (string name in BlockLinearNames(after.Config))
        {
            string module = name[..^".weight".Length];
            var compensated = Assert.IsType<CompensatedRepresentation>(LayerRepresentations.Find(after.Weights, module));
            var (a, b) = compensated.Factors(after.Weights, module);
            Assert.Equal([4L, after.Weights.Get(name).Shape[1]], a.Shape);
            Assert.Contains(b.ToFloatArray(), v => v != 0);
        }
    }

    /// <summary>
    /// The default merge on a 2:4-pruned student: every pruned zero of every block linear is still exactly zero, the kept
    /// weights moved, and the frozen tensors (embeddings, norms, lm_head) are the student's bit for bit.
    /// </summary>
    [Fact]
    public void A_masked_merge_keeps_every_exact_zero()
    {
        using var dir = new TempDir();
        string teacher = RandomFolder(dir, "teacher", 1), student = RandomFolder(dir, "student", 2, edit: Prune2Of4), output = dir.File("merged");
        var (code, _, stderr) = CliTests.Run(Args(teacher, student, output, "--lora-rank", "4"));
        Assert.True(code == 0, stderr);
        Assert.Contains("14 pruned tensors keep their zeros", stderr);

        using var before = ModelLoader.Load(student);
        using var after = ModelLoader.Load(output);
        var linears = BlockLinearNames(before.Config).ToHashSet();
        int zeros = 0;
        foreach (string name in before.Weights.Names)
        {
            float[] b = before.Weights.Get(name).ToFloatArray(), a = after.Weights.Get(name).ToFloatArray();
            if (!linears.Contains(name))
            {
                Assert.True(b.SequenceEqual(a), $"frozen {name} changed");
                continue;
            }
            Assert.False(b.SequenceEqual(a), $"{name}: the merge changed nothing");
            for (int i = 0; i < b.Length; i++)
                if (b[i] == 0) { Assert.Equal(0f, a[i]); zeros++; }
        }
        Assert.Equal(linears.Sum(n => before.Weights.Get(n).ElementCount) / 2, zeros);
    }

    /// <summary>
    /// One training, written merged and kept: both folders load, and their logits on the same tokens agree to float32
    /// rounding (merged: one matmul with W + s·B·A; kept: W·x plus the two thin products). The kept folder exports as a
    /// PEFT LoRA adapter of rank 4 whose lora_alpha is 4 (the scale α/r = 2 is folded into lora_B).
    /// </summary>
    [Fact]
    public void Kept_adapters_give_the_merged_logits_and_export_as_a_peft_adapter()
    {
        using var dir = new TempDir();
        using var teacherModel = ModelLoader.Load(RandomFolder(dir, "teacher", 1));
        string student = RandomFolder(dir, "student", 2);
        using var studentModel = ModelLoader.Load(student);
        var (model, _, _, _) = DistillationStudent.Load(studentModel, QuantizedTraining.WeightsAndScales, 1);
        LoraAdapters.Attach(model, new LoraSettings(4, 8, Keep: true), seed: 3);
        using (var transformer = new Transformer(teacherModel))
        {
            var tokens = new[] { 1, 50, 60, 70, 80, 90, 100, 110, 1, 200, 300, 400, 500, 600, 700, 800 };
            Distillation.Run(model, new TeacherLogits(transformer), _ => tokens, new DistillationOptions { Steps = 3, Batch = 2, SeqLen = 8, Lr = 1e-2f, Warmup = 0 });
        }
        string merged = dir.File("merged"), kept = dir.File("kept");
        foreach (var (folder, keep) in new[] { (merged, false), (kept, true) })
        {
            Directory.CreateDirectory(folder);
            TrainedCheckpoint.Write(model, folder, keepAdapters: keep);
            foreach (string file in new[] { "tokenizer.model", "tokenizer_config.json" }) File.Copy(Path.Combine(student, file), Path.Combine(folder, file));
        }
        Assert.True(File.Exists(Path.Combine(kept, CompensatedRepresentation.FileName)));
        Assert.False(File.Exists(Path.Combine(merged, CompensatedRepresentation.FileName)));

        float[] Logits(string folder)
        {
            using var loaded = ModelLoader.Load(folder);
            using var transformer = new Transformer(loaded);
            var logits = new float[4 * loaded.Config.VocabSize];
            transformer.Forward([1, 100, 200, 300], transformer.NewCache(4), logits);
            return logits;
        }
        float[] fromMerged = Logits(merged), fromKept = Logits(kept), fromStudent = Logits(student);
        double difference = fromMerged.Zip(fromKept, (m, k) => Math.Abs(m - k)).Max(), moved = fromMerged.Zip(fromStudent, (m, s) => Math.Abs(m - s)).Max();
        Assert.True(difference < 1e-4, $"merged and kept logits differ by up to {difference:E2}");
        Assert.True(moved > 100 * difference, $"training moved the logits by only {moved:E2}");

        string peft = dir.File("peft");
        var (code, _, stderr) = CliTests.Run("export", kept, "--format", "peft-lora", "--out", peft);
        Assert.True(code == 0, stderr);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(peft, "adapter_config.json")))!;
        Assert.Equal(4, (int)config["r"]!);
        Assert.Equal(4, (int)config["lora_alpha"]!);
        using var adapter = Formats.Safetensors.SafetensorsFile.LoadSet(Path.Combine(peft, "adapter_model.safetensors"));
        Assert.Equal(28, adapter.Names.Count());
        Assert.Contains("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight", adapter.Names);
    }

    [Fact]
    public void Bad_lora_input_is_a_one_line_user_error_and_writes_nothing()
    {
        using var dir = new TempDir();
        string teacher = RandomFolder(dir, "teacher", 1), student = RandomFolder(dir, "student", 2), output = dir.File("distilled");
        CliTests.AssertUserError(CliTests.Run(Args(teacher, student, output, "--lora-rank", "0")), "--lora-rank: must be positive (got 0)");
        CliTests.AssertUserError(CliTests.Run(Args(teacher, student, output, "--lora-rank", "-3")), "--lora-rank: must be positive");
        // k_proj and v_proj are [8, 16] (2 KV heads of 4): rank 9 is one too many.
        CliTests.AssertUserError(CliTests.Run(Args(teacher, student, output, "--lora-rank", "9")), "--lora-rank 9: larger than min(in, out) = 8 of module model.layers.0.self_attn.k_proj [8, 16]");
        CliTests.AssertUserError(CliTests.Run(Args(teacher, student, output, "--lora-rank", "4", "--lora-alpha", "0")), "--lora-alpha: must be positive");
        CliTests.AssertUserError(CliTests.Run(Args(teacher, student, output, "--lora-keep")), "--lora-keep: needs --lora-rank");
        CliTests.AssertUserError(CliTests.Run(Args(teacher, student, output, "--lora-alpha", "8")), "--lora-alpha: needs --lora-rank");
        string pruned = RandomFolder(dir, "pruned", 3, edit: Prune2Of4);
        CliTests.AssertUserError(CliTests.Run(Args(teacher, pruned, output, "--lora-rank", "4", "--lora-keep")), "--lora-keep: 14 tensors are pruned");

        string recipe = dir.File("rtn4.yaml"), quantized = dir.File("quantized");
        File.WriteAllText(recipe, "modifiers:\n  - method: rtn\n    targets: [Linear]\n    ignore: [lm_head]\n    bits: 4\n    group_size: 32\n");
        CompressionJob.Run(new CompressionRequest(student, recipe, Data, Samples: 2, SequenceLength: 16, Seed: 0, quantized));
        CliTests.AssertUserError(CliTests.Run(Args(teacher, quantized, output, "--lora-rank", "4")), "--lora-rank: module model.layers.0.self_attn.q_proj is GPTQ-packed");
        Assert.False(Directory.Exists(output));
    }
}
