using System.CommandLine;
using System.Diagnostics;
using LlmShrink.Evaluation;
using LlmShrink.Model;

namespace LlmShrink.Cli.Commands;

/// <summary>
/// <c>llmshrink generate MODEL --prompt TEXT --max-tokens N</c>: prefill the prompt in one batched forward pass, then
/// decode one token at a time with the KV cache, streaming the text to stdout. Speeds go to stderr.
/// </summary>
internal static class GenerateCommand
{
    public static Command Create(CancellationToken cancellation)
    {
        var model = new Argument<string>("model") { Description = "Hugging Face folder, .gguf file, llama2.c .bin, or org/name[@revision]" };
        var prompt = new Option<string>("--prompt") { Description = "Text to continue", Required = true };
        var maxTokens = new Option<int>("--max-tokens") { Description = "Number of tokens to generate at most", DefaultValueFactory = _ => 256 };
        var temperature = new Option<float>("--temperature") { Description = "Sampling temperature; 0 = greedy (always the most likely token)", DefaultValueFactory = _ => 0.8f };
        var topP = new Option<float>("--top-p") { Description = "Nucleus sampling: keep the most likely tokens up to this probability mass", DefaultValueFactory = _ => 0.9f };
        var seed = new Option<int?>("--seed") { Description = "Random seed for sampling (default: a fresh one, printed on stderr)" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer file, for llama2.c checkpoints (tokenizer.bin)" };
        var threads = new Option<int>("--threads") { Description = "Worker threads (0 = all cores)", DefaultValueFactory = _ => 0 };
        var command = new Command("generate", "Generate text from a prompt")
        {
            model, prompt, maxTokens, temperature, topP, seed, tokenizer, threads,
        };
        command.SetAction(parse =>
        {
            int max = parse.GetValue(maxTokens);
            if (max < 0) throw new ShrinkException($"--max-tokens: must not be negative (got {max})");
            float t = parse.GetValue(temperature), p = parse.GetValue(topP);
            if (!(t >= 0) || !float.IsFinite(t)) throw new ShrinkException($"--temperature: must be 0 or positive (got {t})");
            if (!(p > 0 && p <= 1)) throw new ShrinkException($"--top-p: must be in (0, 1] (got {p})");
            int s = parse.GetValue(seed) ?? Random.Shared.Next();
            int threadCount = parse.GetValue(threads);
            if (threadCount < 0) throw new ShrinkException($"--threads: must not be negative (got {threadCount})");

            using var loaded = Terminal.LoadModel(parse.GetValue(model)!, cancellation, parse.GetValue(tokenizer));
            Generate(loaded, parse.GetValue(prompt)!, max, new Sampler(t, p, s), threadCount, cancellation);
            Console.Error.WriteLine(t == 0 ? "sampling: greedy" : $"sampling: temperature {t}, top-p {p}, seed {s}");
            return 0;
        });
        return command;
    }

    private static void Generate(LoadedModel model, string prompt, int maxTokens, Sampler sampler, int threads, CancellationToken cancellation)
    {
        var tokenizer = model.RequireTokenizer();
        var config = model.Config;
        var promptIds = tokenizer.Encode(prompt, tokenizer.AddBos);
        if (promptIds.Length == 0) promptIds = [tokenizer.BosId]; // an empty prompt without BOS still needs one token to start from
        if (promptIds.Length + maxTokens > config.MaxPositions)
            throw new ShrinkException($"--max-tokens: the prompt's {promptIds.Length} tokens plus {maxTokens} new ones exceed the model's context of {config.MaxPositions}");

        using var transformer = new Transformer(model, threads);
        var cache = transformer.NewCache(promptIds.Length + maxTokens);
        var logits = new float[config.VocabSize];
        var output = new StreamingDecoder(tokenizer, promptIds);
        Console.Out.Write(prompt);
        Console.Out.Flush();

        var clock = Stopwatch.StartNew();
        transformer.Forward(promptIds, cache, logits);
        double prefillSeconds = clock.Elapsed.TotalSeconds;

        clock.Restart();
        int generated = 0, forwards = 0;
        Span<int> next = stackalloc int[1];
        while (generated < maxTokens)
        {
            cancellation.ThrowIfCancellationRequested();
            next[0] = sampler.Sample(logits);
            if (next[0] == tokenizer.EosId) break;
            generated++;
            Console.Out.Write(output.Append(next[0]));
            Console.Out.Flush();
            if (generated == maxTokens) break; // the last token's logits would never be used
            transformer.Forward(next, cache, logits);
            forwards++;
        }
        double decodeSeconds = clock.Elapsed.TotalSeconds;
        Console.Out.WriteLine(output.Finish());

        Console.Error.WriteLine($"prefill: {promptIds.Length} tokens in {prefillSeconds * 1000:F1} ms ({promptIds.Length / prefillSeconds:F1} tokens/s)");
        Console.Error.WriteLine($"decode: {generated} tokens, {forwards} forward passes in {decodeSeconds * 1000:F1} ms ({forwards / Math.Max(decodeSeconds, 1e-9):F1} tokens/s)");
    }
}
