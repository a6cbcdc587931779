using System.CommandLine;
using System.Diagnostics;
using LlmShrink.Evaluation;
using LlmShrink.Model;

namespace LlmShrink.Cli.Commands;

/// <summary>
/// <c>llmshrink bench MODEL</c>: prompt-processing speed (one batched forward pass over random token ids) and
/// generation speed (one token at a time with the KV cache). Generation is memory-bound: every token streams all
/// linear weights once, so weight bytes per token × tokens/s is the memory bandwidth actually achieved.
/// </summary>
internal static class BenchCommand
{
    public static Command Create(CancellationToken cancellation)
    {
        var model = new Argument<string>("model") { Description = "Model to benchmark (no tokenizer needed)" };
        var promptTokens = new Option<int>("--prompt-tokens") { Description = "Prompt length for prompt processing", DefaultValueFactory = _ => 512 };
        var genTokens = new Option<int>("--gen-tokens") { Description = "Tokens to generate one at a time", DefaultValueFactory = _ => 128 };
        var threads = new Option<int>("--threads") { Description = "Worker threads (0 = all cores)", DefaultValueFactory = _ => 0 };
        var seed = new Option<int>("--seed") { Description = "Seed of the random token ids", DefaultValueFactory = _ => 1234 };
        var json = new Option<bool>("--json") { Description = "Print one JSON object to stdout instead of a table" };
        var command = new Command("bench", "Measure prompt-processing and generation speed")
        {
            model, promptTokens, genTokens, threads, seed, json,
        };
        command.SetAction(parse =>
        {
            int prompt = parse.GetValue(promptTokens), gen = parse.GetValue(genTokens);
            if (prompt < 1) throw new ShrinkException($"--prompt-tokens: must be at least 1 (got {prompt})");
            if (gen < 1) throw new ShrinkException($"--gen-tokens: must be at least 1 (got {gen})");
            int threadCount = parse.GetValue(threads);
            if (threadCount < 0) throw new ShrinkException($"--threads: must not be negative (got {threadCount})");
            string modelPath = parse.GetValue(model)!;

            using var loaded = ModelLoader.Load(modelPath);
            var stats = ModelStatistics.Of(loaded);
            using var transformer = new Transformer(loaded, threadCount);
            int vocab = loaded.Config.VocabSize;
            var random = new Random(parse.GetValue(seed));
            var promptIds = new int[prompt];
            for (int i = 0; i < prompt; i++) promptIds[i] = random.Next(vocab);
            var cache = transformer.NewCache(prompt + gen);
            var logits = new float[vocab];

            // Warm-up: compiles the hot paths and pages the weights in, so neither is timed.
            transformer.Forward(promptIds.AsSpan(0, Math.Min(prompt, 16)), cache, logits);
            transformer.Forward(promptIds.AsSpan(0, 1), cache, logits);
            cache.Clear();
            cancellation.ThrowIfCancellationRequested();

            var clock = Stopwatch.StartNew();
            transformer.Forward(promptIds, cache, logits);
            double prefillSeconds = clock.Elapsed.TotalSeconds;

            Span<int> next = stackalloc int[1];
            clock.Restart();
            for (int i = 0; i < gen; i++)
            {
                cancellation.ThrowIfCancellationRequested();
                next[0] = random.Next(vocab);
                transformer.Forward(next, cache, logits);
            }
            double decodeSeconds = clock.Elapsed.TotalSeconds;

            double prefillRate = prompt / prefillSeconds, decodeRate = gen / decodeSeconds;
            double gigabytesPerSecond = stats.MatmulBytes * decodeRate / 1e9;
            if (parse.GetValue(json)) Terminal.WriteJson(new
            {
                model = modelPath,
                threads = threadCount,
                prompt_tokens = prompt,
                gen_tokens = gen,
                prompt_tokens_per_second = prefillRate,
                gen_tokens_per_second = decodeRate,
                weight_bytes_per_token = stats.MatmulBytes,
                achieved_gb_per_second = gigabytesPerSecond,
            });
            else Terminal.Stdout().Write(Terminal.KeyValueTable("benchmark")
                .AddText("model", modelPath)
                .AddText("threads", threadCount == 0 ? "all cores" : $"{threadCount}")
                .AddText($"prompt processing ({prompt} tokens)", $"{prefillRate:F1} tokens/s")
                .AddText($"generation ({gen} tokens)", $"{decodeRate:F2} tokens/s")
                .AddText("weight bytes per generated token", Terminal.Bytes(stats.MatmulBytes))
                .AddText("achieved memory bandwidth", $"{gigabytesPerSecond:F2} GB/s"));
            return 0;
        });
        return command;
    }
}
