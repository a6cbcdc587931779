using System.CommandLine;
using System.Diagnostics;
using LlmShrink.Compression;
using LlmShrink.Export;
using LlmShrink.Formats;
using LlmShrink.Model;
using LlmShrink.Training;

namespace LlmShrink.Cli.Commands;

/// <summary>
/// <c>llmshrink distill --teacher MODEL --student DIR --data FILE --steps N --out DIR</c>: knowledge distillation of a
/// dense, pruned, GPTQ-packed or low-rank student folder from a teacher's logits (<see cref="Distillation"/>), pruning masks kept and
/// quantized layers trained through fake quantization (<see cref="DistillationStudent"/>, <see cref="FakeQuantization"/>),
/// into a Hugging Face folder of the same kind (quantized layers re-packed). With <c>--teacher-data generate:N</c> the data
/// are N sequences sampled from the teacher (<see cref="TeacherSampling"/>). With <c>--save-every K</c> the output folder
/// holds a finished checkpoint every K steps (<see cref="CheckpointFolder"/>), and an interrupted run keeps the last one.
/// A low-rank student trains its factors and is written back low-rank. With <c>--lora-rank R</c> the student is frozen and
/// only LoRA adapters on its block linears train (<see cref="LoraAdapters"/>), then are merged into the weights (masked on
/// pruned layers) or, with <c>--lora-keep</c>, written beside them as a compensation (<see cref="TrainedCheckpoint"/>).
/// </summary>
internal static class DistillCommand
{
    private const string GeneratePrefix = "generate:";

    public static Command Create(CancellationToken cancellation)
    {
        var teacher = new Option<string>("--teacher") { Description = "Teacher model (Hugging Face folder, .gguf, org/name)", Required = true };
        var student = new Option<string>("--student") { Description = "Student folder: a dense, pruned, GPTQ-quantized or low-rank Hugging Face folder (e.g. from llmshrink compress)", Required = true };
        var data = new Option<string?>("--data") { Description = "Training text (never the held-out evaluation text)" };
        var teacherData = new Option<string?>("--teacher-data") { Description = "generate:N — train on N sequences sampled from the teacher (temperature 1, seeded) instead of --data" };
        var steps = new Option<int>("--steps") { Description = "Optimizer steps", Required = true };
        var output = new Option<string>("--out") { Description = "Folder to write the distilled student into", Required = true };
        var loss = new Option<string>("--loss") { Description = "kl (forward KL), reverse-kl or jsd (generalized JSD with --beta)", DefaultValueFactory = _ => "kl" };
        var beta = new Option<float>("--beta") { Description = "JSD's β (0 < β < 1)", DefaultValueFactory = _ => 0.5f };
        var temperature = new Option<float>("--temperature") { Description = "Softmax temperature of teacher and student in the loss", DefaultValueFactory = _ => 1f };
        var hiddenMse = new Option<float>("--hidden-mse") { Description = "Weight of the MSE between teacher and student final hidden states, added to the loss (0 = none; equal hidden sizes)", DefaultValueFactory = _ => 0f };
        var lr = new Option<float?>("--lr") { Description = "Peak learning rate (linear warmup, then cosine to a tenth of it); default 1e-4, with --lora-rank 1e-3" };
        var warmup = new Option<int>("--warmup") { Description = "Warmup steps", DefaultValueFactory = _ => 10 };
        var batch = new Option<int>("--batch") { Description = "Sequences per step", DefaultValueFactory = _ => 8 };
        var seqLen = new Option<int>("--seq-len") { Description = "Tokens per sequence (BOS first)", DefaultValueFactory = _ => 128 };
        var seed = new Option<int>("--seed") { Description = "Seed of the sampled windows or teacher sequences", DefaultValueFactory = _ => 0 };
        var threads = new Option<int>("--threads") { Description = "Worker threads of the teacher's forward passes (0 = all cores; training kernels use all cores)", DefaultValueFactory = _ => 0 };
        var saveEvery = new Option<int>("--save-every") { Description = "Write a finished checkpoint every K steps (an interrupted run keeps the last one); 0 = only at the end", DefaultValueFactory = _ => 0 };
        var quantizedTrain = new Option<string>("--quantized-train")
        {
            Description = "Quantized (GPTQ-packed) layers: weights+scales (latent weights, scales and asymmetric zeros through fake quantization; codes may change) or scales (PEQA: codes frozen)",
            DefaultValueFactory = _ => WeightsAndScales,
        };
        var latentLr = new Option<float>("--latent-lr")
        {
            Description = "Peak learning rate of quantized layers' latent weights in --quantized-train weights+scales, in steps of their grid (a code flips after about 0.5 / rate updates of consistent push)",
            DefaultValueFactory = _ => 1e-2f,
        };
        var logEvery = new Option<int?>("--log-every") { Description = "Print the loss every K steps on stderr (default: steps / 50)" };
        var loraRank = new Option<int?>("--lora-rank") { Description = "Train only LoRA adapters of rank R on every block linear, the student frozen; merged into the weights at the end (masked on pruned layers)" };
        var loraAlpha = new Option<float?>("--lora-alpha") { Description = "LoRA's α: adapters are scaled by α / R (default 2R, LLM-Pruner's recovery setting)" };
        var loraKeep = new Option<bool>("--lora-keep") { Description = "Write the adapters un-merged, beside the unchanged weights (compensation.safetensors; exports as --format peft-lora / gguf-lora); not for pruned students" };
        var command = new Command("distill", "Distill a teacher into a dense, pruned, quantized or low-rank student folder (KL / reverse KL / JSD on the logits, pruning masks kept, quantized layers re-packed, or LoRA adapters only)")
        {
            teacher, student, data, teacherData, steps, output, loss, beta, temperature, hiddenMse, lr, warmup, batch, seqLen, seed, threads, saveEvery, quantizedTrain, latentLr, logEvery,
            loraRank, loraAlpha, loraKeep,
        };
        command.SetAction(parse =>
        {
            var lora = ParseLora(parse.GetValue(loraRank), parse.GetValue(loraAlpha), parse.GetValue(loraKeep));
            var options = new DistillationOptions
            {
                Steps = parse.GetValue(steps), Batch = parse.GetValue(batch), SeqLen = parse.GetValue(seqLen),
                Lr = parse.GetValue(lr) ?? (lora is null ? FullRate : LoraSettings.DefaultRate), LatentLr = parse.GetValue(latentLr), Warmup = parse.GetValue(warmup),
                HiddenMse = parse.GetValue(hiddenMse),
                Loss = new DistillationLoss(ParseLoss(parse.GetValue(loss)!), parse.GetValue(temperature), parse.GetValue(beta)),
            };
            options.Validate();
            var quantizedTraining = ParseQuantizedTraining(parse.GetValue(quantizedTrain)!);
            int threadCount = parse.GetValue(threads), every = parse.GetValue(saveEvery), s = parse.GetValue(seed);
            int log = parse.GetValue(logEvery) ?? Math.Max(1, options.Steps / 50);
            if (threadCount < 0) throw new ShrinkException($"--threads: must not be negative (got {threadCount})");
            if (every < 0) throw new ShrinkException($"--save-every: must not be negative (got {every})");
            if (log <= 0) throw new ShrinkException($"--log-every: must be positive (got {log})");
            string teacherPath = parse.GetValue(teacher)!, studentPath = parse.GetValue(student)!, outputPath = parse.GetValue(output)!;
            string? dataPath = parse.GetValue(data), generate = parse.GetValue(teacherData);
            int generated = ParseGenerate(dataPath, generate);
            if (!Directory.Exists(studentPath))
                throw ShrinkException.InFile(studentPath, "is not a folder; --student takes a Hugging Face folder (e.g. one llmshrink compress wrote)");
            if (dataPath is not null) TextFile.EnsureText(dataPath, "training text");
            var folder = new CheckpointFolder(outputPath, dataPath is null ? [teacherPath, studentPath] : [teacherPath, studentPath, dataPath]);

            using var studentModel = ModelLoader.Load(studentPath);
            using var teacherModel = ModelLoader.Load(teacherPath);
            var tokenizer = studentModel.RequireTokenizer();
            int vocab = studentModel.Config.VocabSize;
            if (teacherModel.Config.VocabSize != vocab)
                throw ShrinkException.InFile(studentPath, $"has a vocabulary of {vocab} tokens, the teacher {teacherPath} one of {teacherModel.Config.VocabSize}; distillation compares them token by token");
            if (options.HiddenMse > 0 && teacherModel.Config.HiddenSize != studentModel.Config.HiddenSize)
                throw ShrinkException.InFile(studentPath, $"--hidden-mse: the student's hidden size {studentModel.Config.HiddenSize} differs from the teacher's {teacherModel.Config.HiddenSize}");
            foreach (var (model, path) in new[] { (studentModel, studentPath), (teacherModel, teacherPath) })
                if (options.SeqLen > model.Config.MaxPositions)
                    throw ShrinkException.InFile(path, $"has a context of {model.Config.MaxPositions} tokens, shorter than --seq-len {options.SeqLen}");
            var textBatches = dataPath is null ? null
                : DistillationBatches.FromText(CalibrationSet.Tokenize(dataPath, tokenizer), tokenizer.BosId, options.Batch, options.SeqLen, s, dataPath);
            var (trainable, masked, quantized, factored) = DistillationStudent.Load(studentModel, quantizedTraining, options.LatentLr / options.Lr);
            var adapted = lora is null ? [] : LoraAdapters.Attach(trainable, lora, s);
            if (lora is { Keep: true } && masked.Count > 0)
                throw ShrinkException.InFile(studentPath, $"--lora-keep: {masked.Count} tensors are pruned; their adapters train through the mask so that the merge keeps every zero, which an un-merged adapter cannot hold (drop --lora-keep)");
            using var transformer = new Transformer(teacherModel, threadCount);
            var teacherLogits = new TeacherLogits(transformer);

            long parameters = trainable.Trainable.Sum(p => (long)p.Value.Length);
            string quantizedNote = quantized.Count == 0 ? "" : $", {quantized.Count} quantized tensors train {(quantizedTraining == QuantizedTraining.Scales ? "their scales (codes frozen)" : "weights and scales through fake quantization")}";
            string factoredNote = factored.Count == 0 ? "" : $", {factored.Count} low-rank modules train their factors";
            string loraNote = lora is null ? "" : $", LoRA r={lora.Rank} α={lora.Alpha:G} on {adapted.Count} modules, the rest frozen";
            Console.Error.WriteLine($"distilling {Terminal.Count(parameters)} parameters ({masked.Count} pruned tensors keep their zeros{quantizedNote}{factoredNote}{loraNote}): {options.Steps} steps of {options.Batch}×{options.SeqLen} tokens");
            string[] stages = generated > 0 ? ["sampling from the teacher", "distilling"] : ["distilling"];
            var clock = Stopwatch.StartNew();
            var losses = new List<double>();
            var rates = new List<float>();
            string command = "llmshrink " + string.Join(" ", parse.Tokens.Select(t => t.Value.Contains(' ') ? $"\"{t.Value}\"" : t.Value));
            string source = generated > 0 ? $"{generated} sequences of {options.SeqLen} tokens sampled from the teacher (temperature 1, seed {s})" : $"`{dataPath}`, windows at seeded random positions (seed {s})";
            void Save() => folder.Save(dir =>
            {
                TrainedCheckpoint.Write(trainable, dir, keepAdapters: lora is { Keep: true });
                // The importance matrix (calibration inputs' mean x² per column) weights a GGUF export's re-fit of re-packed
                // quantized layers; the student's inputs after distillation are close to the ones it was measured on.
                foreach (string file in SafetensorsExporter.TokenizerFiles.Append("recipe.yaml").Append(CompressedCheckpointWriter.ImportanceFile))
                {
                    string from = Path.Combine(studentPath, file);
                    if (File.Exists(from)) File.Copy(from, Path.Combine(dir, file));
                }
                new DistillationReport(command, teacherPath, studentPath, source, options, masked, quantized, quantizedTraining, losses, rates, clock.Elapsed)
                {
                    Factored = factored, Lora = lora, Adapted = adapted.Count,
                }.Write(Path.Combine(dir, "report.md"), log);
            });

            Terminal.WithStages(stages, report =>
            {
                var batches = textBatches ?? DistillationBatches.FromSequences(
                    TeacherSampling.Generate(transformer, tokenizer.BosId, generated, options.SeqLen, s, done => report(0, done / (double)generated), cancellation),
                    options.Batch);
                int stage = stages.Length - 1;
                var trainClock = Stopwatch.StartNew();
                return Distillation.Run(trainable, teacherLogits, batches, options, (step, value, rate) =>
                {
                    losses.Add(value);
                    rates.Add(rate);
                    report(stage, (step + 1) / (double)options.Steps);
                    if ((step + 1) % log == 0 || step + 1 == options.Steps)
                    {
                        double tokensPerSecond = (step + 1) * (double)options.Batch * options.SeqLen / trainClock.Elapsed.TotalSeconds;
                        Console.Error.WriteLine($"step {step + 1}/{options.Steps}  loss {value:F4}  lr {rate:E2}  {tokensPerSecond:F0} tokens/s");
                    }
                    if (every > 0 && (step + 1) % every == 0 && step + 1 != options.Steps) Save();
                }, cancellation);
            });
            Save();
            Console.Error.WriteLine($"wrote {outputPath}: loss {losses[0]:F4} → {losses[^1]:F4} in {clock.Elapsed.TotalSeconds:F1} s");
            return 0;
        });
        return command;
    }

    private const string WeightsAndScales = "weights+scales";

    /// <summary>--lr without --lora-rank: a fine-tuning rate for a pretrained student (<see cref="DistillationOptions.Lr"/>).</summary>
    private const float FullRate = 1e-4f;

    /// <summary>
    /// --quantized-train. The default trains weights and scales (LLM-QAT's and EfficientQAT's setting). On tinylit-8m's
    /// GPTQ w3g128 student, 100 steps of 8 × 128, held-out KL from 0.01159: both modes 0.00748 at --latent-lr 1e-2 (no
    /// latent weight moved half a grid step, so no code changed); at 5e-2 codes flip under minibatch noise and KL rose to
    /// 0.0197 (first 80 windows). At 300 steps some codes do flip: weights+scales 0.00611, scales 0.00613. Scales (PEQA)
    /// keeps every code and trains ~1/64 as many values at 3-bit g128.
    /// </summary>
    private static QuantizedTraining ParseQuantizedTraining(string name) => name switch
    {
        WeightsAndScales => QuantizedTraining.WeightsAndScales,
        "scales" => QuantizedTraining.Scales,
        _ => throw new ShrinkException($"--quantized-train: '{name}' is not one of weights+scales, scales"),
    };

    /// <summary>--lora-rank / --lora-alpha / --lora-keep, or null without --lora-rank (then the other two are errors).</summary>
    private static LoraSettings? ParseLora(int? rank, float? alpha, bool keep)
    {
        if (rank is not { } r)
        {
            if (alpha is not null) throw new ShrinkException("--lora-alpha: needs --lora-rank");
            if (keep) throw new ShrinkException("--lora-keep: needs --lora-rank");
            return null;
        }
        var settings = new LoraSettings(r, alpha ?? LoraSettings.DefaultAlpha(r), keep);
        LoraAdapters.Validate(settings);
        return settings;
    }

    private static Divergence ParseLoss(string name) => name switch
    {
        "kl" => Divergence.ForwardKl,
        "reverse-kl" => Divergence.ReverseKl,
        "jsd" => Divergence.Jsd,
        _ => throw new ShrinkException($"--loss: '{name}' is not one of kl, reverse-kl, jsd"),
    };

    /// <summary>N of --teacher-data generate:N, or 0 when the data come from --data; exactly one of the two is needed.</summary>
    private static int ParseGenerate(string? data, string? teacherData)
    {
        if ((data is null) == (teacherData is null)) throw new ShrinkException("distill: give exactly one of --data FILE and --teacher-data generate:N");
        if (teacherData is null) return 0;
        if (!teacherData.StartsWith(GeneratePrefix, StringComparison.Ordinal) || !int.TryParse(teacherData.AsSpan(GeneratePrefix.Length), out int n) || n <= 0)
            throw new ShrinkException($"--teacher-data: '{teacherData}' is not generate:N with N > 0");
        return n;
    }
}
