using System.CommandLine;
using System.Diagnostics;
using LlmShrink.Evaluation;
using LlmShrink.Model;

namespace LlmShrink.Cli.Commands;

/// <summary>
/// <c>llmshrink bench MODEL</c>: prompt-processing speed (one batched forward pass over random token ids) and
/// generation speed (one token at a time with the KV cache). Generation is memory-bound: every token streams all
/// linear weights once, so weight bytes per token × tokens/s is the memory bandwidth actually achieved, shown against
/// the read bandwidth measured in the same process; prompt processing is arithmetic, shown against the measured FMA
/// peak (<see cref="HardwareLimits"/>); both are timed by <see cref="GenerationBenchmark"/>. With <c>--repetitions N</c> (llama-bench's <c>-r</c>) the prompt and the generation
/// run N times and the rates are reported as mean ± sample standard deviation, which on a shared host is the honest
/// figure: consecutive single runs on this 2-core VM differed by up to 30 %.
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
        var repetitions = new Option<int>("--repetitions", "-r") { Description = "Runs of prompt + generation; rates are mean ± standard deviation", DefaultValueFactory = _ => 1 };
        var json = new Option<bool>("--json") { Description = "Print one JSON object to stdout instead of a table" };
        var command = new Command("bench", "Measure prompt-processing and generation speed")
        {
            model, promptTokens, genTokens, threads, seed, repetitions, json,
        };
        command.SetAction(parse =>
        {
            int prompt = parse.GetValue(promptTokens), gen = parse.GetValue(genTokens);
            if (prompt < 1) throw new ShrinkException($"--prompt-tokens: must be at least 1 (got {prompt})");
            if (gen < 1) throw new ShrinkException($"--gen-tokens: must be at least 1 (got {gen})");
            int threadCount = parse.GetValue(threads);
            if (threadCount < 0) throw new ShrinkException($"--threads: must not be negative (got {threadCount})");
            int runs = parse.GetValue(repetitions);
            if (runs < 1) throw new ShrinkException($"--repetitions: must be at least 1 (got {runs})");
            string modelPath = parse.GetValue(model)!;

            // The machine's ceilings first, before the model's pages and threads compete with them (and again at the end).
            var limits = HardwareLimits.Measure(Environment.ProcessorCount);
            cancellation.ThrowIfCancellationRequested();

            var loading = Stopwatch.StartNew(); // until the kernels' layouts are built: what a user waits before the first token
            using var loaded = Terminal.LoadModel(modelPath, cancellation);
            using var transformer = new Transformer(loaded, threadCount);
            double loadSeconds = loading.Elapsed.TotalSeconds;
            var work = LinearWork.Of(transformer);
            var rates = GenerationBenchmark.Measure(transformer, prompt, gen, runs, parse.GetValue(seed), cancellation);
            // Measured again afterwards, keeping the better of each figure: on a shared host the memory bandwidth drifts
            // by ±30 % within minutes, and one low reading would inflate the fractions below.
            limits = limits.Best(HardwareLimits.Measure(Environment.ProcessorCount));

            (double prefillRate, double prefillSpread) = MeanAndDeviation([.. rates.Select(r => r.PromptTokensPerSecond)]);
            (double decodeRate, double decodeSpread) = MeanAndDeviation([.. rates.Select(r => r.GenerationTokensPerSecond)]);
            double prefillGflops = work.PromptFlops(loaded.Config, prompt) / prompt * prefillRate / 1e9;
            double gigabytesPerSecond = work.BytesPerToken * decodeRate / 1e9;
            double percentOfPeak = 100 * prefillGflops / limits.FmaGflops, percentOfBandwidth = 100 * gigabytesPerSecond / limits.ReadGBps;
            if (parse.GetValue(json)) Terminal.WriteJson(new
            {
                model = modelPath,
                threads = threadCount,
                prompt_tokens = prompt,
                gen_tokens = gen,
                repetitions = runs,
                load_seconds = loadSeconds,
                prompt_tokens_per_second = prefillRate,
                prompt_tokens_per_second_stddev = prefillSpread,
                prompt_gflops = prefillGflops,
                prompt_percent_of_fma_peak = percentOfPeak,
                gen_tokens_per_second = decodeRate,
                gen_tokens_per_second_stddev = decodeSpread,
                weight_bytes_per_token = work.BytesPerToken,
                achieved_gb_per_second = gigabytesPerSecond,
                gen_percent_of_read_bandwidth = percentOfBandwidth,
                machine = new
                {
                    threads = limits.Threads,
                    copy_gb_per_second = limits.CopyGBps,
                    read_gb_per_second = limits.ReadGBps,
                    fma_gflops = limits.FmaGflops,
                },
            });
            else Terminal.Stdout().Write(Terminal.KeyValueTable("benchmark")
                .AddText("model", modelPath)
                .AddText("threads", threadCount == 0 ? "all cores" : $"{threadCount}")
                .AddText("load", $"{loadSeconds:F2} s")
                .AddText($"machine ({limits.Threads} threads)", $"copy {limits.CopyGBps:F1} GB/s (read+written), read {limits.ReadGBps:F1} GB/s, F32 FMA {limits.FmaGflops:F0} GFLOP/s")
                .AddText($"prompt processing ({prompt} tokens)", $"{prefillRate:F1}{Spread(prefillSpread, runs, "F1")} tokens/s, {prefillGflops:F1} GFLOP/s ({percentOfPeak:F0}% of FMA peak)")
                .AddText($"generation ({gen} tokens)", $"{decodeRate:F2}{Spread(decodeSpread, runs, "F2")} tokens/s")
                .AddText("weight bytes per generated token", Terminal.Bytes(work.BytesPerToken))
                .AddText("achieved memory bandwidth", $"{gigabytesPerSecond:F2} GB/s ({percentOfBandwidth:F0}% of read bandwidth)"));
            return 0;
        });
        return command;
    }

    /// <summary>Mean and sample standard deviation (0 for a single run).</summary>
    private static (double Mean, double Deviation) MeanAndDeviation(double[] samples)
    {
        double mean = samples.Average();
        double squares = samples.Sum(v => (v - mean) * (v - mean));
        return (mean, samples.Length > 1 ? Math.Sqrt(squares / (samples.Length - 1)) : 0);
    }

    private static string Spread(double deviation, int runs, string format) => runs > 1 ? $" ± {deviation.ToString(format)} ({runs} runs)" : "";

    /// <summary>What the linear layers of a transformer cost: bytes streamed per generated token, multiply-adds per row.</summary>
    private sealed record LinearWork(long BytesPerToken, long BlockParameters, long HeadParameters)
    {
        public static LinearWork Of(Transformer transformer)
        {
            long bytes = transformer.LmHead.WeightBytes, parameters = 0;
            foreach (var b in transformer.Blocks)
                foreach (var layer in b.Linears)
                {
                    bytes += layer.WeightBytes;
                    parameters += (long)layer.InFeatures * layer.OutFeatures;
                }
            var head = transformer.LmHead;
            return new LinearWork(bytes, parameters, (long)head.InFeatures * head.OutFeatures);
        }

        /// <summary>
        /// Flops of one forward pass over an n-token prompt: every block weight is a multiply-add per token, the output
        /// projection runs for the last token only, and token t's attention does q·k and the weighted sum of values over
        /// t + 1 positions (2 multiply-adds per element of q; norms, RoPE, softmax left out as lower order).
        /// </summary>
        public double PromptFlops(ModelConfig c, int n) =>
            2.0 * BlockParameters * n + 2.0 * HeadParameters + 4.0 * Enumerable.Range(0, c.NumLayers).Sum(l => (double)c.QDimOf(l)) * (n * (n + 1.0) / 2);
    }
}
