using System.CommandLine;
using System.Diagnostics;
using LlmShrink.Compression;
using LlmShrink.Export;
using LlmShrink.Formats;
using LlmShrink.Model;
using LlmShrink.Tokenization;
using LlmShrink.Training;

namespace LlmShrink.Cli.Commands;

/// <summary>
/// <c>llmshrink train --config FILE --data FILE --steps N --out DIR</c>: a small model trained from scratch (random
/// GPT-2-style initialization, next-token cross-entropy, AdamW) into a Hugging Face folder, e.g. to make test models.
/// </summary>
internal static class TrainCommand
{
    public static Command Create(CancellationToken cancellation)
    {
        var config = new Option<string>("--config") { Description = "Hugging Face config.json of the model to train", Required = true };
        var data = new Option<string>("--data") { Description = "Training text", Required = true };
        var steps = new Option<int>("--steps") { Description = "Optimizer steps", Required = true };
        var output = new Option<string>("--out") { Description = "Folder to write the trained model into", Required = true };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Folder with tokenizer.json or tokenizer.model (default: the config's folder)" };
        var batch = new Option<int>("--batch") { Description = "Sequences per step", DefaultValueFactory = _ => 8 };
        var seqLen = new Option<int>("--seq-len") { Description = "Tokens per sequence", DefaultValueFactory = _ => 128 };
        var lr = new Option<float>("--lr") { Description = "Peak learning rate (linear warmup, then cosine to a tenth of it)", DefaultValueFactory = _ => 1e-3f };
        var warmup = new Option<int>("--warmup") { Description = "Warmup steps", DefaultValueFactory = _ => 10 };
        var seed = new Option<int>("--seed") { Description = "Seed of the initialization and of the sampled windows", DefaultValueFactory = _ => 0 };
        var recompute = new Option<bool>("--recompute") { Description = "Recompute each block's activations in the backward pass (less memory, one more forward)" };
        var command = new Command("train", "Train a small model from scratch on a text file (next-token cross-entropy, AdamW)")
        {
            config, data, steps, output, tokenizer, batch, seqLen, lr, warmup, seed, recompute,
        };
        command.SetAction(parse =>
        {
            var options = new PretrainingOptions
            {
                Steps = parse.GetValue(steps), Batch = parse.GetValue(batch), SeqLen = parse.GetValue(seqLen), Lr = parse.GetValue(lr),
                Warmup = parse.GetValue(warmup), Seed = parse.GetValue(seed), Recompute = parse.GetValue(recompute),
            };
            options.Validate();
            string configPath = parse.GetValue(config)!, dataPath = parse.GetValue(data)!;
            var modelConfig = HfConfig.Parse(configPath);
            modelConfig.Validate(configPath);
            string tokenizerFolder = parse.GetValue(tokenizer) ?? Path.GetDirectoryName(Path.GetFullPath(configPath))!;
            var textTokenizer = TokenizerFactory.FromFolder(tokenizerFolder)
                ?? throw ShrinkException.InFile(tokenizerFolder, "no tokenizer.json or tokenizer.model (give the tokenizer's folder with --tokenizer)");
            if (textTokenizer.VocabSize > modelConfig.VocabSize)
                throw ShrinkException.InFile(configPath, $"vocab_size {modelConfig.VocabSize} is smaller than the tokenizer's {textTokenizer.VocabSize} tokens");
            var tokens = CalibrationSet.Tokenize(dataPath, textTokenizer);
            if (tokens.Length < options.SeqLen)
                throw ShrinkException.InFile(dataPath, $"has {tokens.Length} tokens, fewer than one training sequence of --seq-len {options.SeqLen}");

            using var folder = new OutputFolder(parse.GetValue(output)!, [configPath, dataPath, tokenizerFolder]);
            var model = Initialization.Random(modelConfig, options.Seed);
            long parameters = model.Parameters.Sum(p => (long)p.Value.Length);
            Console.Error.WriteLine($"training {Terminal.Count(parameters)} parameters on {Terminal.Count(tokens.Length)} tokens: {options.Steps} steps of {options.Batch}×{options.SeqLen} tokens");
            int every = Math.Max(1, options.Steps / 50);
            var clock = Stopwatch.StartNew();
            var losses = Pretraining.Run(model, tokens, textTokenizer.BosId, options, (step, loss, rate) =>
            {
                if ((step + 1) % every != 0 && step + 1 != options.Steps) return;
                double tokensPerSecond = (step + 1) * (double)options.Batch * options.SeqLen / clock.Elapsed.TotalSeconds;
                Console.Error.WriteLine($"step {step + 1}/{options.Steps}  loss {loss:F4}  lr {rate:E2}  {tokensPerSecond:F0} tokens/s");
            }, cancellation);

            TrainedCheckpoint.Write(model, folder.Path);
            foreach (string file in SafetensorsExporter.TokenizerFiles)
            {
                string source = Path.Combine(tokenizerFolder, file);
                if (File.Exists(source)) File.Copy(source, folder.File(file));
            }
            folder.Commit();
            Console.Error.WriteLine($"wrote {parse.GetValue(output)}: loss {losses[0]:F4} → {losses[^1]:F4} in {clock.Elapsed.TotalSeconds:F1} s");
            return 0;
        });
        return command;
    }
}
