using LlmShrink.Compression;
using LlmShrink.Formats;
using LlmShrink.Model;
using LlmShrink.Training;
using Xunit;

namespace LlmShrink.Tests;

/// <summary><c>llmshrink distill</c> on tiny random models with tinylit-8m's tokenizer, and a few steps of tinylit-8m itself.</summary>
public class DistillCommandTests
{
    private static string Config(int vocab) => $$"""
        {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 4, "vocab_size": {{vocab}}, "max_position_embeddings": 64,
         "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": false, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2}
        """;

    /// <summary>A random model (GPT-2 initialization, <paramref name="seed"/>) as a Hugging Face folder with tinylit-8m's tokenizer.</summary>
    internal static string RandomFolder(TempDir dir, string name, int seed, int vocab = 4096, Action<TrainableModel>? edit = null)
    {
        string folder = dir.File(name);
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "config.json"), Config(vocab));
        var model = Initialization.Random(HfConfig.Parse(Path.Combine(folder, "config.json")), seed);
        edit?.Invoke(model);
        TrainedCheckpoint.Write(model, folder);
        foreach (string file in new[] { "tokenizer.model", "tokenizer_config.json" })
            File.Copy(Path.Combine(SharedData.TinyLit, file), Path.Combine(folder, file));
        return folder;
    }

    /// <summary>2:4 pruning by magnitude: in every 4 consecutive inputs of a row, the 2 smallest weights become 0.</summary>
    internal static void Prune2Of4(TrainableModel model)
    {
        foreach (var p in model.Blocks.SelectMany(b => new[] { b.Q, b.K, b.V, b.O, b.Gate, b.Up, b.Down }))
            for (int g = 0; g < p.Value.Length; g += 4)
                foreach (int i in Enumerable.Range(g, 4).OrderBy(i => MathF.Abs(p.Value[i])).Take(2)) p.Value[i] = 0;
    }

    private static string[] BlockLinearNames(ModelConfig c) =>
        [.. Enumerable.Range(0, c.NumLayers).SelectMany(l => new[] { TensorNames.Q, TensorNames.K, TensorNames.V, TensorNames.O, TensorNames.Gate, TensorNames.Up, TensorNames.Down }.Select(s => TensorNames.Layer(l, s)))];

    [Fact]
    public void A_2of4_student_keeps_exactly_its_zeros_and_the_written_folder_loads_and_runs()
    {
        using var dir = new TempDir();
        string teacher = RandomFolder(dir, "teacher", 1), student = RandomFolder(dir, "student", 2, edit: Prune2Of4), output = dir.File("distilled");
        File.WriteAllText(Path.Combine(student, "recipe.yaml"), "modifiers:\n  - method: magnitude\n    pattern: \"2:4\"\n");
        var (code, _, stderr) = CliTests.Run("distill", "--teacher", teacher, "--student", student, "--data", SharedData.Corpus("tinylit_calib.txt"),
            "--steps", "3", "--batch", "2", "--seq-len", "16", "--lr", "1e-2", "--warmup", "0", "--out", output);
        Assert.True(code == 0, stderr);
        Assert.Contains("14 pruned tensors keep their zeros", stderr);
        Assert.True(File.Exists(Path.Combine(output, "recipe.yaml")));
        Assert.Contains("| 3 |", File.ReadAllText(Path.Combine(output, "report.md")));

        using var before = ModelLoader.Load(student);
        using var after = ModelLoader.Load(output);
        bool moved = false;
        foreach (string name in BlockLinearNames(before.Config))
        {
            float[] b = before.Weights.Get(name).ToFloatArray(), a = after.Weights.Get(name).ToFloatArray();
            for (int i = 0; i < b.Length; i++) Assert.True((b[i] == 0) == (a[i] == 0), $"{name}[{i}]: {b[i]} → {a[i]}");
            moved |= !b.SequenceEqual(a);
        }
        Assert.True(moved, "training changed no weight");
        using var transformer = new Transformer(after);
        var logits = new float[3 * after.Config.VocabSize];
        transformer.Forward([1, 100, 200], transformer.NewCache(3), logits);
        Assert.All(logits, v => Assert.True(float.IsFinite(v)));
    }

    /// <summary>The model with the smaller half of each block linear row's weights (by magnitude) set to zero and masked.</summary>
    private static TrainableModel PrunedHalf(LoadedModel model)
    {
        var trainable = TrainableModel.FromLoaded(model);
        foreach (var p in trainable.Blocks.SelectMany(b => new[] { b.Q, b.K, b.V, b.O, b.Gate, b.Up, b.Down }))
        {
            for (int r = 0; r < p.Rows; r++)
            {
                var row = p.Value.AsSpan(r * p.Columns, p.Columns);
                float threshold = row.ToArray().Select(MathF.Abs).Order().ElementAt(p.Columns / 2);
                foreach (ref float v in row) if (MathF.Abs(v) < threshold) v = 0;
            }
            p.MaskZeros();
        }
        return trainable;
    }

    /// <summary>
    /// tinylit-8m with half of every block linear's weights removed (smallest magnitude per row) distilled from tinylit-8m on one
    /// fixed batch of 2 × 32 tokens: at lr 1e-4 (no warmup) the forward KL falls at every step, and after 4 steps to below 90 % of its first value.
    /// </summary>
    [Fact]
    public void The_distillation_loss_on_the_training_batch_goes_down()
    {
        using var teacherModel = ModelLoader.Load(SharedData.TinyLit);
        using var studentModel = ModelLoader.Load(SharedData.TinyLit);
        var student = PrunedHalf(studentModel);
        var tokens = CalibrationSet.FromFile(SharedData.Corpus("tinylit_calib.txt"), studentModel.RequireTokenizer(), 2, 32, 7).Samples.SelectMany(s => s).ToArray();
        using var transformer = new Transformer(teacherModel);
        var losses = Distillation.Run(student, new TeacherLogits(transformer), _ => tokens,
            new DistillationOptions { Steps = 5, Batch = 2, SeqLen = 32, Lr = 1e-5f, Warmup = 0 });
        for (int s = 1; s < losses.Count; s++) Assert.True(losses[s] < losses[s - 1], $"step {s + 1}: {losses[s]} ≥ {losses[s - 1]}");
        Assert.True(losses[^1] < 0.9 * losses[0], $"{losses[0]} → {losses[^1]}");
    }

    /// <summary>
    /// --hidden-mse: the teacher's final hidden states (inference Transformer, caught after the last block and normed) are
    /// the TrainableModel's for the same weights; and the 50 % pruned tinylit-8m of the test above, distilled on KL + 10 × MSE
    /// of those states at lr 1e-5, lowers that combined loss at every one of 4 steps.
    /// </summary>
    [Fact]
    public void The_hidden_state_term_matches_the_trainable_forward_and_goes_down()
    {
        using var dir = new TempDir();
        using var tiny = ModelLoader.Load(RandomFolder(dir, "teacher", 1));
        int[] tokens = [1, 50, 60, 70, 1, 80, 90, 100];
        var trainable = TrainableModel.FromLoaded(tiny);
        var logits = trainable.Forward(tokens, 2, 4).ToArray();
        using (var transformer = new Transformer(tiny))
        {
            var teacherLogits = new float[logits.Length];
            var hidden = new float[8 * tiny.Config.HiddenSize];
            new TeacherLogits(transformer).Compute(tokens, 2, 4, teacherLogits, hidden);
            for (int i = 0; i < hidden.Length; i++) Assert.Equal(trainable.FinalHidden[i], hidden[i], 1e-4f);
            for (int i = 0; i < logits.Length; i++) Assert.Equal(logits[i], teacherLogits[i], 1e-4f);
        }

        using var teacherModel = ModelLoader.Load(SharedData.TinyLit);
        using var studentModel = ModelLoader.Load(SharedData.TinyLit);
        var student = PrunedHalf(studentModel);
        var batch = CalibrationSet.FromFile(SharedData.Corpus("tinylit_calib.txt"), studentModel.RequireTokenizer(), 2, 32, 7).Samples.SelectMany(s => s).ToArray();
        using var teacher = new Transformer(teacherModel);
        var losses = Distillation.Run(student, new TeacherLogits(teacher), _ => batch,
            new DistillationOptions { Steps = 4, Batch = 2, SeqLen = 32, Lr = 1e-5f, Warmup = 0, HiddenMse = 10 });
        for (int s = 1; s < losses.Count; s++) Assert.True(losses[s] < losses[s - 1], $"step {s + 1}: {losses[s]} ≥ {losses[s - 1]}");
    }

    [Fact]
    public void Teacher_data_generate_N_is_N_sequences_of_the_requested_length_fixed_by_the_seed()
    {
        using var dir = new TempDir();
        using var teacher = ModelLoader.Load(RandomFolder(dir, "teacher", 1));
        using var transformer = new Transformer(teacher);
        var first = TeacherSampling.Generate(transformer, 1, 3, 12, seed: 5);
        var again = TeacherSampling.Generate(transformer, 1, 3, 12, seed: 5);
        var other = TeacherSampling.Generate(transformer, 1, 3, 12, seed: 6);
        Assert.Equal(3, first.Length);
        Assert.All(first, s => { Assert.Equal(12, s.Length); Assert.Equal(1, s[0]); Assert.All(s, t => Assert.InRange(t, 0, 4095)); });
        Assert.Equal(first, again);
        Assert.NotEqual(first, other);

        string output = dir.File("distilled");
        var (code, _, stderr) = CliTests.Run("distill", "--teacher", teacher.Source, "--student", RandomFolder(dir, "student", 2),
            "--teacher-data", "generate:3", "--steps", "2", "--batch", "2", "--seq-len", "12", "--out", output);
        Assert.True(code == 0, stderr);
        Assert.Contains("3 sequences of 12 tokens sampled from the teacher", File.ReadAllText(Path.Combine(output, "report.md")));
    }

    [Fact]
    public void Bad_input_is_a_one_line_user_error_and_writes_nothing()
    {
        using var dir = new TempDir();
        string teacher = RandomFolder(dir, "teacher", 1), student = RandomFolder(dir, "student", 2), data = SharedData.Corpus("tinylit_calib.txt");
        string output = dir.File("distilled");
        string[] Args(string studentFolder, params string[] more) =>
            ["distill", "--teacher", teacher, "--student", studentFolder, "--steps", "2", "--batch", "1", "--seq-len", "8", "--out", output, .. more];

        CliTests.AssertUserError(CliTests.Run(Args(RandomFolder(dir, "wide", 3, vocab: 5000), "--data", data)), "vocabulary of 5000 tokens");
        CliTests.AssertUserError(CliTests.Run(Args(student, "--data", dir.File("missing.txt"))), "missing.txt");
        File.WriteAllText(dir.File("empty.txt"), "");
        CliTests.AssertUserError(CliTests.Run(Args(student, "--data", dir.File("empty.txt"))), "0 tokens");
        CliTests.AssertUserError(CliTests.Run(Args(student)), "exactly one of --data");
        CliTests.AssertUserError(CliTests.Run(Args(student, "--teacher-data", "generate:0")), "--teacher-data");
        CliTests.AssertUserError(CliTests.Run(Args(Path.Combine(student, "config.json"), "--data", data)), "is not a folder");
        CliTests.AssertUserError(CliTests.Run([.. Args(student, "--data", data), "--loss", "mse"]), "--loss");
        CliTests.AssertUserError(CliTests.Run([.. Args(student, "--data", data), "--loss", "jsd", "--beta", "1"]), "--beta");

        CliTests.AssertUserError(CliTests.Run([.. Args(student, "--data", data), "--quantized-train", "codes"]), "--quantized-train");
        // A packed form other than GPTQ and low-rank factors (W8A8 here; 2:4-sparse 4-bit, ggml blocks, EoRA alike): not trainable yet.
        string w8a8 = dir.File("w8a8");
        CompressionJob.Run(new CompressionRequest(student, "w8a8-smoothquant", data, Samples: 2, SequenceLength: 16, Seed: 0, w8a8));
        var refused = CliTests.Run(Args(w8a8, "--data", data));
        CliTests.AssertUserError(refused, "module model.layers.0.self_attn.q_proj of");
        Assert.Contains("is w8a8-packed", refused.Stderr);
        Assert.False(Directory.Exists(output));
    }

    [Fact]
    public void A_checkpoint_folder_holds_only_finished_saves()
    {
        using var dir = new TempDir();
        string target = dir.File("out");
        var folder = new CheckpointFolder(target, []);
        folder.Save(d => File.WriteAllText(Path.Combine(d, "step"), "1"));
        folder.Save(d => File.WriteAllText(Path.Combine(d, "step"), "2"));
        Assert.Throws<OperationCanceledException>(() => folder.Save(d =>
        {
            File.WriteAllText(Path.Combine(d, "step"), "3");
            throw new OperationCanceledException();
        }));
        Assert.Equal("2", File.ReadAllText(Path.Combine(target, "step")));
        Assert.Equal(["out"], Directory.GetFileSystemEntries(dir.Path).Select(Path.GetFileName));
        Assert.Equal(2, folder.Saves);
    }
}
