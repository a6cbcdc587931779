using System.Diagnostics;
using System.Runtime.InteropServices;
using LlmShrink.Analysis;
using LlmShrink.Compression.LowRank;
using LlmShrink.Compression.Pruning;
using LlmShrink.Compression.Quantization;
using LlmShrink.Evaluation;
using LlmShrink.Formats;
using LlmShrink.Kernels;
using LlmShrink.LinearAlgebra;

// Micro-benchmarks of the quantization work (issue 3): the F32 GEMM the prompt path uses (and W8A8's int8 GEMM), Hessian accumulation,
// and GPTQ and SparseGPT on one 4096×4096 layer; and of decode (issue 4): a packed GPTQ matrix × vector, and where a whole model's
// decode token goes. Plain Stopwatch timing: one warm-up run, then the best of N (the minimum is the run least
// disturbed by other processes on a shared machine).
//
//   dotnet bench/LlmShrink.Bench/bin/Release/net10.0/LlmShrink.Bench.dll gemm|hessian|gptq|sparsegpt|gemv|gemv24|all [--key value ...]
//   dotnet bench/LlmShrink.Bench/bin/Release/net10.0/LlmShrink.Bench.dll ggml-gemv [--n 1 --in 4096 --out 4096 --reps 20]
//   dotnet bench/LlmShrink.Bench/bin/Release/net10.0/LlmShrink.Bench.dll decode --model DIR [--threads 2 --prompt 512 --rounds 4]
//   dotnet bench/LlmShrink.Bench/bin/Release/net10.0/LlmShrink.Bench.dll svd [--rows 4096 --columns 11008 --threads 2 --reps 1 --save MATRIX.f32]
//   dotnet bench/LlmShrink.Bench/bin/Release/net10.0/LlmShrink.Bench.dll whiten [--rows 2048 --columns 8192]

var command = args.Length > 0 ? args[0] : "all";
var options = Options.Parse(args.Skip(1).ToArray());
Console.WriteLine($"# {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores, .NET {Environment.Version}");
switch (command)
{
    case "gemm": Benchmarks.Gemm(options); break;
    case "hessian": Benchmarks.Hessian(options, Benchmarks.Gemm(options)); break;
    case "gptq": Benchmarks.GptqLayer(options); break;
    case "sparsegpt": Benchmarks.SparseGptLayer(options); break;
    case "gemv": Benchmarks.GptqGemv(options); break;
    case "gemv24": Benchmarks.Sparse24Gemv(options); break;
    case "ggml-gemv": Benchmarks.GgmlGemv(options); break;
    case "decode": Benchmarks.Decode(options); break;
    case "svd": Benchmarks.SvdTimes(options); break;
    case "whiten": Benchmarks.WhitenedLayer(options); break;
    case "all": Benchmarks.Hessian(options, Benchmarks.Gemm(options)); Benchmarks.GptqLayer(options); Benchmarks.SparseGptLayer(options); break;
    default:
        Console.Error.WriteLine("usage: LlmShrink.Bench gemm|hessian|gptq|sparsegpt|gemv|all [--n 512 --in 4096 --out 4096 --tokens 8192 --width 4096 --rows 4096 --bits 4 --group 128 --reps N]");
        Console.Error.WriteLine("       LlmShrink.Bench gemv24 [--in 2048 --out 8192 --group 128 --reps 30 --copies 1|8 --n 1]");
        Console.Error.WriteLine("       LlmShrink.Bench ggml-gemv [--n 1 --in 2048 --out 8192 --copies 8 --reps 20 --types F32,BF16,F16,Q8_0,Q6_K,Q4_K,Q4_0]");
        Console.Error.WriteLine("       LlmShrink.Bench decode --model DIR [--threads 2 --prompt 512 --rounds 4]");
        Console.Error.WriteLine("       LlmShrink.Bench svd [--rows 4096 --columns 11008 --threads 2 --reps 1 --save MATRIX.f32]");
        Console.Error.WriteLine("       LlmShrink.Bench whiten [--rows 2048 --columns 8192]");
        return 2;
}
return 0;

static class Benchmarks
{
    /// <summary>y[n, out] = x[n, in] · W[out, in]ᵀ through Kernels/MatMul.Multiply; 2·n·in·out flops. Returns GFLOP/s by thread count.</summary>
    public static unsafe double[] Gemm(Options o)
    {
        int n = o.Int("n", 512), inDim = o.Int("in", 4096), outDim = o.Int("out", 4096), reps = o.Int("reps", 5);
        var x = RandomFloats(n * inDim, 1);
        var y = new float[(long)n * outDim];
        var wHandle = (float*)NativeMemory.AlignedAlloc((nuint)((long)inDim * outDim * sizeof(float)), 64);
        RandomFloats(inDim * outDim, 2).CopyTo(new Span<float>(wHandle, inDim * outDim));
        double flops = 2.0 * n * inDim * outDim;
        Console.WriteLine($"\n## gemm: MatMul.Multiply, x {n}×{inDim} · Wᵀ ({outDim}×{inDim}), 2·n·in·out = {flops / 1e9:F1} GFLOP, best of {reps}");
        Console.WriteLine("| threads | seconds | GFLOP/s |");
        Console.WriteLine("|---:|---:|---:|");
        var rates = new double[3];
        foreach (int threads in new[] { 1, 2 })
        {
            double best = BestOf(reps, () => MatMul.Multiply(x, wHandle, y, n, inDim, outDim, threads: threads));
            rates[threads] = flops / best / 1e9;
            Console.WriteLine($"| {threads} | {best:F3} | {rates[threads]:F1} |");
        }
        NativeMemory.AlignedFree(wHandle);
        Int8Gemm(n, inDim, outDim, reps, rates);
        return rates;
    }

    /// <summary>The same product in integers (W8A8's Kernels/Int8MatMul): 2·n·in·out int8 ops, against the float rate.</summary>
    private static unsafe void Int8Gemm(int n, int inDim, int outDim, int reps, double[] floatRates)
    {
        var random = new Random(3);
        var x = new sbyte[n * inDim];
        for (int i = 0; i < x.Length; i++) x[i] = (sbyte)random.Next(-127, 128);
        var w = (sbyte*)NativeMemory.AlignedAlloc((nuint)((long)inDim * outDim), 64);
        for (long i = 0; i < (long)inDim * outDim; i++) w[i] = (sbyte)random.Next(-127, 128);
        var y = new int[(long)n * outDim];
        double ops = 2.0 * n * inDim * outDim;
        Console.WriteLine($"\n## int8 gemm: Int8MatMul.Multiply, same shape, int8 × int8 → int32, best of {reps}");
        Console.WriteLine("| threads | seconds | G int8 op/s | × float32 |");
        Console.WriteLine("|---:|---:|---:|---:|");
        foreach (int threads in new[] { 1, 2 })
        {
            double best = BestOf(reps, () => Int8MatMul.Multiply(x, w, y, n, inDim, outDim, threads: threads));
            double rate = ops / best / 1e9;
            Console.WriteLine($"| {threads} | {best:F3} | {rate:F1} | {rate / floatRates[threads]:F2} |");
        }
        NativeMemory.AlignedFree(w);
    }

    /// <summary>
    /// HessianAccumulator.Add on random activations. Flop convention: n·d² — the symmetric rank-n update computes
    /// the d(d+1)/2 ≈ d²/2 entries of the upper triangle, each a sum of n multiply-adds (2 flops), which is the
    /// useful work of XᵀX; a GEMM computing the full d×d product would count 2·n·d². The accumulator runs on one
    /// thread, so it is compared with the 1-thread GEMM rate (and, for the issue's target, the 2-thread rate).
    /// </summary>
    public static void Hessian(Options o, double[] gemm)
    {
        int width = o.Int("width", 4096), tokens = o.Int("tokens", 8192), reps = o.Int("reps", 3);
        long fullTokens = 128L * 2048;
        var x = RandomFloats(tokens * width, 3);
        double flops = (double)tokens * width * width;
        Console.WriteLine($"\n## hessian: HessianAccumulator({width}).Add of {tokens} tokens (n·d² = {flops / 1e9:F1} GFLOP), best of {reps}");
        double best = BestOf(reps, () => new HessianAccumulator(width).Add(x, tokens));
        double rate = flops / best / 1e9;
        double fullSeconds = best * fullTokens / tokens;
        Console.WriteLine("| tokens | seconds | GFLOP/s (n·d²) | % of 1-thread GEMM | % of 2-thread GEMM | extrapolated to 128×2048 tokens |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---:|");
        Console.WriteLine($"| {tokens} | {best:F3} | {rate:F1} | {100 * rate / gemm[1]:F0}% | {100 * rate / gemm[2]:F0}% | {fullSeconds:F1} s |");
    }

    /// <summary>Gptq.Quantize of one rows×width layer, 4-bit groups of 128, H accumulated from random activations.</summary>
    public static void GptqLayer(Options o)
    {
        int rows = o.Int("rows", 4096), width = o.Int("width", 4096), reps = o.Int("reps", 3);
        int tokens = o.Int("hessian-tokens", 2 * width); // more tokens than columns: H is full rank before dampening
        var accumulator = new HessianAccumulator(width);
        accumulator.Add(RandomFloats(tokens * width, 4), tokens);
        var h = accumulator.ToHessian();
        var w = RandomFloats(rows * width, 5);
        var scheme = QuantScheme.Grouped(4, 128, symmetric: false);
        Console.WriteLine($"\n## gptq: Gptq.Quantize {rows}×{width}, {scheme}, H from {tokens} random tokens, best of {reps}");
        double cholesky = BestOf(reps, () => Cholesky.InverseUpperFactor(h, width));
        double best = BestOf(reps, () => Gptq.Quantize(w, rows, width, h, scheme));
        Console.WriteLine("| layer | GPTQ seconds | of which Cholesky inverse | target |");
        Console.WriteLine("|---|---:|---:|---|");
        Console.WriteLine($"| {rows}×{width} | {best:F2} | {cholesky:F2} | < 5 s: {(best < 5 ? "met" : "not met")} |");
    }

    /// <summary>
    /// SparseGpt.Prune of one rows×width layer — 50 % unstructured, 2:4, and 2:4 with 4-bit groups of 128 in the same pass —
    /// H accumulated from random activations as for <see cref="GptqLayer"/>.
    /// </summary>
    public static void SparseGptLayer(Options o)
    {
        int rows = o.Int("rows", 4096), width = o.Int("width", 4096), reps = o.Int("reps", 3);
        int tokens = o.Int("hessian-tokens", 2 * width);
        var accumulator = new HessianAccumulator(width);
        accumulator.Add(RandomFloats(tokens * width, 4), tokens);
        var h = accumulator.ToHessian();
        var w = RandomFloats(rows * width, 5);
        var twoFour = SparsityPattern.Parse("2:4");
        var scheme = QuantScheme.Grouped(4, 128, symmetric: false);
        // The target is for two otherwise idle cores; on a shared host the load average says how far from that a run was.
        string load = File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Split(' ')[0] : "unknown";
        Console.WriteLine($"\n## sparsegpt: SparseGpt.Prune {rows}×{width}, H from {tokens} random tokens, {Environment.ProcessorCount} threads, best of {reps}, load average {load}");
        Console.WriteLine("| layer | pruning | seconds | target |");
        Console.WriteLine("|---|---|---:|---|");
        foreach (var (name, run) in new (string, Action)[]
        {
            ("50 % unstructured", () => SparseGpt.Prune(w, rows, width, h, SparsityPattern.Unstructured, 0.5)),
            ("2:4", () => SparseGpt.Prune(w, rows, width, h, twoFour)),
            ($"2:4 + {scheme}", () => SparseGpt.Prune(w, rows, width, h, twoFour, scheme: scheme)),
        })
        {
            double best = BestOf(reps, run);
            Console.WriteLine($"| {rows}×{width} | {name} | {best:F2} | < 3 s: {(best < 3 ? "met" : "not met")} |");
        }
    }

    /// <summary>
    /// Decode's matrix × vector (n = 1) through GptqMatMul on the Llama-3.2-1B shapes (out×in: gate/up 8192×2048,
    /// down 2048×8192, lm_head 128256×2048), random codes. Decode streams every packed byte once per token, so the
    /// figure of merit is GB/s of packed codes against the machine's read bandwidth on as many threads.
    /// </summary>
    public static void GptqGemv(Options o)
    {
        int bits = o.Int("bits", 4), groupSize = o.Int("group", 128), reps = o.Int("reps", 20);
        var limits = new[] { HardwareLimits.Measure(1), HardwareLimits.Measure(2) };
        Console.WriteLine($"\n## gemv: GptqMatMul.Multiply n = 1, {bits}-bit g{groupSize}, best of {reps}; read bandwidth 1 thread {limits[0].ReadGBps:F1} GB/s, 2 threads {limits[1].ReadGBps:F1} GB/s");
        Console.WriteLine("| out×in | packed MB | threads | µs | GB/s packed | % of read bandwidth |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|");
        var shapes = o.Int("out", 0) > 0 ? [(o.Int("out", 0), o.Int("in", 2048))] : new[] { (8192, 2048), (2048, 8192), (128256, 2048) };
        foreach ((int outDim, int inDim) in shapes)
        {
            var random = new Random(outDim + inDim);
            var codes = new byte[(long)outDim * inDim];
            random.NextBytes(codes);
            for (long i = 0; i < codes.LongLength; i++) codes[i] &= (byte)((1 << bits) - 1);
            int groups = (inDim + groupSize - 1) / groupSize;
            var scales = RandomFloats(groups * outDim, 6);
            var zeros = new int[groups * outDim];
            for (int i = 0; i < zeros.Length; i++) zeros[i] = random.Next(1, (1 << bits) + 1);
            var layer = new GptqMatMul(bits, inDim, outDim, codes, scales, zeros, GptqMatMul.SequentialGroups(inDim, groupSize));
            codes = [];
            var x = RandomFloats(inDim, 7);
            var y = new float[outDim];
            double packed = (double)outDim * inDim * bits / 8;
            foreach (int threads in new[] { 1, 2 })
            {
                double best = BestOf(reps, () => layer.Multiply(x, y, 1, threads: threads));
                double rate = packed / best / 1e9;
                Console.WriteLine($"| {outDim}×{inDim} | {packed / 1e6:F1} | {threads} | {best * 1e6:F0} | {rate:F1} | {100 * rate / limits[threads - 1].ReadGBps:F0}% |");
            }
        }
    }

    /// <summary>
    /// Decode's matrix × vector (n = 1) on every weight format read in place: F32 (MatMul), BF16 and F16
    /// (HalfWidthMatMul; F16 as FiniteFloat16, which a model's F16 tensors without infinities run) and the ggml blocks with a kernel (GgmlMatMul). Random code bytes under a small fp16 d, so every
    /// block is valid. With --copies C the calls cycle through C different matrices of each type, so that with C·size
    /// above the L3 every call streams its matrix from DRAM, as decoding a whole model does; GB/s counts the bytes each
    /// format stores, against the read bandwidth measured in-process (HardwareLimits) for the same thread count.
    /// </summary>
    public static unsafe void GgmlGemv(Options o)
    {
        int n = o.Int("n", 1), inDim = o.Int("in", 2048), outDim = o.Int("out", 8192), reps = o.Int("reps", 20), copies = o.Int("copies", 8);
        var types = o.Text("types", "F32,BF16,F16,Q8_0,Q6_K,Q5_K,Q4_K,Q4_0,IQ4_XS,IQ3_S,IQ2_S").Split(',').Select(Enum.Parse<TensorType>).ToArray();
        var limits = new[] { HardwareLimits.Measure(1), HardwareLimits.Measure(2) };
        Console.WriteLine($"\n## ggml-gemv: n = {n}, {outDim}×{inDim}, {copies} matrices per type in turn, best of {reps}; " +
            $"read bandwidth 1 thread {limits[0].ReadGBps:F1} GB/s, 2 threads {limits[1].ReadGBps:F1} GB/s");
        Console.WriteLine("| type | MB each | threads | µs | GB/s | of read bandwidth | GFLOP/s |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|");
        var x = RandomFloats(n * inDim, 7);
        var y = new float[n * outDim];
        var random = new Random(9);
        foreach (var type in types)
        {
            long bytes = TensorTypes.ByteCount(type, (long)outDim * inDim);
            var matrices = new byte*[copies];
            for (int c = 0; c < copies; c++)
            {
                matrices[c] = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
                FillValid(type, new Span<byte>(matrices[c], checked((int)bytes)), random);
            }
            foreach (int threads in new[] { 1, 2 })
            {
                int next = 0;
                Action call = type switch
                {
                    TensorType.F32 => () => MatMul.Multiply(x, (float*)matrices[next++ % copies], y, n, inDim, outDim, WorkerPool.Shared, threads),
                    TensorType.BF16 => () => new HalfWidthMatMul<Bfloat16>((ushort*)matrices[next++ % copies], inDim, outDim).Multiply(x, y, n, WorkerPool.Shared, threads),
                    TensorType.F16 => () => new HalfWidthMatMul<FiniteFloat16>((ushort*)matrices[next++ % copies], inDim, outDim).Multiply(x, y, n, WorkerPool.Shared, threads),
                    _ => () => GgmlMatMul.Multiply(type, x, matrices[next++ % copies], y, n, inDim, outDim, WorkerPool.Shared, threads),
                };
                double best = BestOf(reps, call);
                double rate = bytes / best / 1e9;
                Console.WriteLine($"| {type} | {bytes / 1e6:F1} | {threads} | {best * 1e6:F0} | {rate:F1} | {100 * rate / limits[threads - 1].ReadGBps:F0}% | {2.0 * n * inDim * outDim / best / 1e9:F0} |");
            }
            foreach (var m in matrices) NativeMemory.AlignedFree(m);
        }
    }

    /// <summary>Random values of <paramref name="type"/>: small normal floats, or random code bytes under small fp16 scales.</summary>
    private static void FillValid(TensorType type, Span<byte> bytes, Random random)
    {
        if (type is TensorType.F32 or TensorType.BF16 or TensorType.F16)
        {
            var values = RandomFloats(checked((int)(bytes.Length / TensorTypes.ByteCount(type, 1))), random.Next());
            for (int i = 0; i < values.Length; i++)
                switch (type)
                {
                    case TensorType.F32: BitConverter.TryWriteBytes(bytes[(4 * i)..], values[i]); break;
                    case TensorType.F16: BitConverter.TryWriteBytes(bytes[(2 * i)..], (Half)values[i]); break;
                    default: BitConverter.TryWriteBytes(bytes[(2 * i)..], (ushort)(BitConverter.SingleToUInt32Bits(values[i]) >> 16)); break;
                }
            return;
        }
        random.NextBytes(bytes);
        int blockBytes = TensorTypes.BlockBytes(type);
        int scale = type == TensorType.Q6_K ? 208 : 0; // where the block's fp16 d sits
        for (int b = 0; b < bytes.Length; b += blockBytes)
        {
            BitConverter.TryWriteBytes(bytes[(b + scale)..], (Half)0.01f);
            if (type is TensorType.Q4_K or TensorType.Q5_K) BitConverter.TryWriteBytes(bytes[(b + 2)..], (Half)0.01f);
        }
    }

    /// <summary>
    /// Decode's matrix × vector for a 2:4-sparse 4-bit matrix (Kernels/Sparse24MatMul) against the dense 4-bit GPTQ kernel
    /// (GptqMatMul, the same group size, no act-order) on the same shape: by default the Llama-3.2-1B MLP shapes out×in
    /// 8192×2048 and 2048×8192. The two kernels are timed alternately, one call each in turn, so that both see the same
    /// drift of a shared machine; each figure is the best of --reps calls. With --copies 1 both matrices stay in L3
    /// (8.4 + 6.0 MB); with --copies 8 the calls cycle through 8 different matrices of each kind (115 MB), so every call
    /// streams its matrix from DRAM, as decoding a whole model does. GB/s counts the bytes each kernel reads
    /// (WeightBytes: codes, places, scales, zeros as stored); "byte ratio" is the speed-up that reading fewer bytes alone
    /// would give, the ceiling of a bandwidth-bound kernel.
    /// </summary>
    public static void Sparse24Gemv(Options o)
    {
        int groupSize = o.Int("group", 128), reps = o.Int("reps", 30), n = o.Int("n", 1);
        var shapes = o.Int("out", 0) > 0 ? [(o.Int("out", 0), o.Int("in", 2048))] : new[] { (8192, 2048), (2048, 8192) };
        var regimes = o.Int("copies", 0) > 0 ? [o.Int("copies", 0)] : new[] { 1, 8 };
        var limits = new[] { HardwareLimits.Measure(1), HardwareLimits.Measure(2) };
        Console.WriteLine($"\n## gemv24: n = {n}, dense 4-bit g{groupSize} (GptqMatMul) against 2:4 + 4-bit g{groupSize} (Sparse24MatMul), alternating, best of {reps}; " +
            $"read bandwidth 1 thread {limits[0].ReadGBps:F1} GB/s, 2 threads {limits[1].ReadGBps:F1} GB/s");
        Console.WriteLine("| out×in | matrices | threads | dense MB | dense µs | dense GB/s | 2:4 MB | 2:4 µs | 2:4 GB/s | byte ratio | speed ratio | of byte ratio |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach ((int outDim, int inDim) in shapes)
            foreach (int copies in regimes)
            {
                var dense = new GptqMatMul[copies];
                var sparse = new Sparse24Int4Matrix[copies];
                for (int c = 0; c < copies; c++) (dense[c], sparse[c]) = RandomLayers(inDim, outDim, groupSize, seed: 100 * c + outDim + inDim);
                var x = RandomFloats(n * inDim, 7);
                var y = new float[n * outDim];
                double denseBytes = dense[0].WeightBytes, sparseBytes = sparse[0].WeightBytes;
                foreach (int threads in new[] { 1, 2 })
                {
                    for (int c = 0; c < copies; c++) // warm-up: the JIT's optimized code, pages touched
                        for (int i = 0; i < 3; i++)
                        {
                            dense[c].Multiply(x, y, n, threads: threads);
                            Sparse24MatMul.Multiply(sparse[c], x, y, n, threads: threads);
                        }
                    double bestDense = double.MaxValue, bestSparse = double.MaxValue;
                    for (int i = 0; i < reps; i++)
                    {
                        var layer = dense[i % copies];
                        var clock = Stopwatch.StartNew();
                        layer.Multiply(x, y, n, threads: threads);
                        bestDense = Math.Min(bestDense, clock.Elapsed.TotalSeconds);
                        var matrix = sparse[i % copies];
                        clock.Restart();
                        Sparse24MatMul.Multiply(matrix, x, y, n, threads: threads);
                        bestSparse = Math.Min(bestSparse, clock.Elapsed.TotalSeconds);
                    }
                    double byteRatio = denseBytes / sparseBytes, speedRatio = bestDense / bestSparse;
                    Console.WriteLine($"| {outDim}×{inDim} | {copies} | {threads} | {denseBytes / 1e6:F2} | {bestDense * 1e6:F1} | {denseBytes / bestDense / 1e9:F1} | " +
                        $"{sparseBytes / 1e6:F2} | {bestSparse * 1e6:F1} | {sparseBytes / bestSparse / 1e9:F1} | {byteRatio:F3} | {speedRatio:F3} | {100 * speedRatio / byteRatio:F0}% |");
                }
            }
    }

    /// <summary>A dense 4-bit GPTQ layer and a 2:4-sparse one of the same shape and group size, random codes and scales.</summary>
    static (GptqMatMul Dense, Sparse24Int4Matrix Sparse) RandomLayers(int inDim, int outDim, int groupSize, int seed)
    {
        var random = new Random(seed);
        var codes = new byte[(long)outDim * inDim];
        random.NextBytes(codes);
        for (long i = 0; i < codes.LongLength; i++) codes[i] &= 15;
        int groups = (inDim + groupSize - 1) / groupSize;
        var scales = RandomFloats(groups * outDim, seed);
        for (int i = 0; i < scales.Length; i++) scales[i] = (float)(Half)scales[i];
        var zeros = new int[groups * outDim];
        for (int i = 0; i < zeros.Length; i++) zeros[i] = random.Next(1, 17);
        var dense = new GptqMatMul(4, inDim, outDim, codes, scales, zeros, GptqMatMul.SequentialGroups(inDim, groupSize));
        var keep = new bool[codes.LongLength];
        for (long quad = 0; quad < codes.LongLength / 4; quad++)
        {
            int first = random.Next(4), second = (first + 1 + random.Next(3)) % 4;
            keep[4 * quad + first] = keep[4 * quad + second] = true;
        }
        return (dense, new Sparse24Int4Matrix(inDim, outDim, groupSize, codes, keep, scales, zeros));
    }

    /// <summary>
    /// Svd.SingularValues and Svd.Decompose (thin U·S·Vᵀ) of a random Gaussian float32 matrix (issue 13: 4096×11008 on 2
    /// threads, against numpy's gesdd; bench/svd_numpy.py times numpy on the matrix saved with --save). Each of --reps
    /// rounds times both once, with the load average beside it. Accuracy: the relative reconstruction error over
    /// --check-rows random rows (‖A − U·S·Vᵀ‖_F / ‖A‖_F on those rows), the largest |VᵀV − I| over --check-rows pairs of
    /// rows of Vᵀ, and how far the values-only S is from the decomposition's. --save also writes S as raw float64 to
    /// MATRIX.f32.s.f64 for the Python script to compare.
    /// </summary>
    public static void SvdTimes(Options o)
    {
        int rows = o.Int("rows", 4096), columns = o.Int("columns", 11008), threads = o.Int("threads", 2), reps = o.Int("reps", 1);
        int checkRows = o.Int("check-rows", 256);
        var random = new Random(o.Int("seed", 13));
        var a = new float[(long)rows * columns];
        for (long i = 0; i < a.LongLength; i++)
            a[i] = (float)(Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()));
        string? save = o.Text("save");
        if (save != null) File.WriteAllBytes(save, MemoryMarshal.AsBytes(a.AsSpan()).ToArray());
        Svd.Decompose(RandomFloats(200 * 600, 7), 200, 600, threads); // JIT warm-up

        Console.WriteLine($"\n## svd: random Gaussian float32 {rows}×{columns}, {threads} threads");
        Console.WriteLine("| round | load before | singular values s | thin U·S·Vᵀ s | load after |");
        Console.WriteLine("|---:|---:|---:|---:|---:|");
        double[] values = [];
        ThinSvd? svd = null;
        for (int round = 1; round <= reps; round++)
        {
            string before = LoadAverage();
            var clock = Stopwatch.StartNew();
            values = Svd.SingularValues(a, rows, columns, threads);
            double valuesSeconds = clock.Elapsed.TotalSeconds;
            clock.Restart();
            svd = Svd.Decompose(a, rows, columns, threads);
            double svdSeconds = clock.Elapsed.TotalSeconds;
            Console.WriteLine($"| {round} | {before} | {valuesSeconds:F2} | {svdSeconds:F2} | {LoadAverage()} |");
        }
        if (svd is null) return;
        if (save != null) File.WriteAllBytes(save + ".s.f64", MemoryMarshal.AsBytes(svd.S.AsSpan()).ToArray());

        int k = svd.Rank;
        var sample = Enumerable.Range(0, checkRows).Select(_ => random.Next(rows)).ToArray();
        double error = 0, norm = 0;
        Parallel.For(0, sample.Length, new ParallelOptions { MaxDegreeOfParallelism = threads }, () => (0.0, 0.0), (s, _, sums) =>
        {
            int i = sample[s];
            var residual = new double[columns];
            for (int j = 0; j < columns; j++) residual[j] = a[(long)i * columns + j];
            double rowNorm = System.Numerics.Tensors.TensorPrimitives.Dot<double>(residual, residual);
            for (int t = 0; t < k; t++)
                System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(svd.Vt.AsSpan(t * columns, columns), -svd.U[(long)i * k + t] * svd.S[t], residual, residual);
            return (sums.Item1 + System.Numerics.Tensors.TensorPrimitives.Dot<double>(residual, residual), sums.Item2 + rowNorm);
        }, sums => { lock (sample) { error += sums.Item1; norm += sums.Item2; } });
        double orthogonality = 0;
        for (int pair = 0; pair < checkRows; pair++)
        {
            int p = random.Next(k), q = pair % 8 == 0 ? p : random.Next(k);
            double dot = System.Numerics.Tensors.TensorPrimitives.Dot<double>(svd.Vt.AsSpan(p * columns, columns), svd.Vt.AsSpan(q * columns, columns));
            orthogonality = Math.Max(orthogonality, Math.Abs(dot - (p == q ? 1 : 0)));
        }
        double valuesGap = values.Zip(svd.S, (x, y) => Math.Abs(x - y) / y).Max();
        Console.WriteLine($"σ₁ = {svd.S[0]:F6}, σ_k = {svd.S[k - 1]:F6}; ‖A − U·S·Vᵀ‖_F/‖A‖_F over {checkRows} rows = {Math.Sqrt(error / norm):E2}; " +
            $"max |VᵀV − I| over {checkRows} pairs = {orthogonality:E2}; values-only S vs decomposition S, max relative difference = {valuesGap:E2}");
    }

    /// <summary>
    /// What <c>analyze</c> does to one block linear W [rows, columns] beside its KL runs, step by step (one timed run each,
    /// all cores): SVD-LLM's whitening L (Cholesky of the dampened input Gram matrix), W·L, the raw and whitened spectra
    /// (Gram matrix and eigenvalues), and the half-rank trial's SVD of W·L and factors (V·L⁻¹). The default shape is the
    /// Llama-3.2-1B down_proj. The Gram matrix is a random diagonally dominant one: the steps' costs do not depend on it.
    /// </summary>
    public static void WhitenedLayer(Options o)
    {
        int rows = o.Int("rows", 2048), columns = o.Int("columns", 8192);
        var random = new Random(17);
        var w = RandomFloats(rows * columns, 19);
        var h = new double[(long)columns * columns];
        for (int i = 0; i < columns; i++)
        {
            h[(long)i * columns + i] = 2 + random.NextDouble();
            for (int j = 0; j < i; j++) h[(long)i * columns + j] = h[(long)j * columns + i] = (random.NextDouble() - 0.5) / columns;
        }
        var warm = RandomFloats(300 * 600, 23); // JIT warm-up of every step on a small matrix
        Time(() => WeightSpectrum.Of(warm, 300, 600, InputTransform.Whitening(SmallGram(600), 600, 1e-6)).Truncate(100));
        GramSpectrum.SingularValues(InputTransform.Identity(600).Apply(warm, 300), 300, 600);

        Console.WriteLine($"\n## whitened layer: W {rows}×{columns}, {Environment.ProcessorCount} threads, load before {LoadAverage()}");
        Console.WriteLine("| step | seconds |");
        Console.WriteLine("|---|---:|");
        WhiteningTransform? whitening = null;
        double[] whitened = [];
        WeightSpectrum? spectrum = null;
        int rank = LowRankFactors.RankForRatio(rows, columns, 0.5);
        Row("whitening L (Cholesky)", () => whitening = InputTransform.Whitening(h, columns, 1e-6));
        Row("W·L", () => whitened = whitening!.Apply(w, rows));
        Row("raw spectrum (Gram + eigenvalues)", () => GramSpectrum.SingularValues(InputTransform.Identity(columns).Apply(w, rows), rows, columns));
        Row("whitened spectrum of W·L (Gram + eigenvalues)", () => GramSpectrum.SingularValues(whitened, rows, columns));
        Row("half rank: W·L and its thin SVD", () => spectrum = WeightSpectrum.Of(w, rows, columns, whitening!));
        Row($"half rank: factors at rank {rank} (V·L⁻¹)", () => spectrum!.Truncate(rank));
        Console.WriteLine($"load after {LoadAverage()}");

        static void Row(string step, Action run) => Console.WriteLine($"| {step} | {Time(run):F2} |");
        static double Time(Action run)
        {
            var clock = Stopwatch.StartNew();
            run();
            return clock.Elapsed.TotalSeconds;
        }
        static double[] SmallGram(int n)
        {
            var g = new double[n * n];
            for (int i = 0; i < n; i++) g[i * n + i] = 1;
            return g;
        }
    }

    static string LoadAverage() => File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Split(' ')[0] : "unknown";

    /// <summary>One warm-up run (JIT, page faults), then the fastest of <paramref name="reps"/> timed runs.</summary>
    static double BestOf(int reps, Action run)
    {
        run();
        double best = double.MaxValue;
        for (int i = 0; i < reps; i++)
        {
            var clock = Stopwatch.StartNew();
            run();
            best = Math.Min(best, clock.Elapsed.TotalSeconds);
        }
        return best;
    }

    static float[] RandomFloats(int count, int seed)
    {
        var random = new Random(seed);
        var values = new float[count];
        for (int i = 0; i < count; i++) values[i] = (float)(random.NextDouble() * 2 - 1);
        return values;
    }

    /// <summary>
    /// Where a decode token's time goes on a model folder: the linear layers alone (every block's seven and lm_head at
    /// n = 1 — the bytes a token streams) against whole tokens after a prompt of --prompt random tokens; the difference is
    /// attention over the cached positions, norms, RoPE and the hand-offs between calls. Each round measures the read
    /// bandwidth first, because on a shared host it drifts between rounds.
    /// </summary>
    public static void Decode(Options o)
    {
        string folder = o.Text("model") ?? throw new ArgumentException("decode needs --model DIR");
        int threads = o.Int("threads", 2), prompt = o.Int("prompt", 512), rounds = o.Int("rounds", 4), reps = o.Int("reps", 10);
        using var loaded = LlmShrink.Model.ModelLoader.Load(folder);
        using var transformer = new LlmShrink.Model.Transformer(loaded, threads);
        var c = transformer.Config;
        var layers = transformer.Blocks.SelectMany(b => b.Linears).Append(transformer.LmHead).ToArray();
        long bytes = layers.Sum(l => l.WeightBytes);
        var random = new Random(5);
        var tokens = Enumerable.Range(0, prompt).Select(_ => random.Next(c.VocabSize)).ToArray();
        var cache = transformer.NewCache(prompt + 2 * rounds * reps + 32);
        var logits = new float[c.VocabSize];
        transformer.Forward(tokens, cache, logits);
        var x = RandomFloats(layers.Max(l => l.InFeatures), 6);
        var y = new float[layers.Max(l => l.OutFeatures)];
        void Linears() { foreach (var l in layers) l.Apply(x.AsSpan(0, l.InFeatures), y.AsSpan(0, l.OutFeatures), 1, WorkerPool.Shared, threads); }
        void Token() => transformer.Forward(tokens.AsSpan(0, 1), cache, logits);
        for (int i = 0; i < 30; i++) { Linears(); if (i < 16) Token(); } // the JIT's optimized code, pages in

        Console.WriteLine($"\n## decode: {folder}, {threads} threads, {bytes / 1e6:F1} MB of linear weights per token, after a {prompt}-token prompt; {reps} tokens per figure");
        Console.WriteLine("| round | read GB/s | linears ms | linears GB/s | % of read | token ms | token GB/s | % of read | rest of a token ms |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (int round = 1; round <= rounds; round++)
        {
            double read = HardwareLimits.Measure(Environment.ProcessorCount, repeats: 2).ReadGBps;
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < reps; i++) Linears();
            double linears = clock.Elapsed.TotalMilliseconds / reps;
            clock.Restart();
            for (int i = 0; i < reps; i++) Token();
            double token = clock.Elapsed.TotalMilliseconds / reps;
            double linearRate = bytes / linears / 1e6, tokenRate = bytes / token / 1e6;
            Console.WriteLine($"| {round} | {read:F1} | {linears:F2} | {linearRate:F1} | {100 * linearRate / read:F0}% | {token:F2} | {tokenRate:F1} | {100 * tokenRate / read:F0}% | {token - linears:F2} |");
        }
        LinearsByRole(transformer, x, y, threads, reps);
    }

    /// <summary>
    /// The linears' time split by their place in a block (q, k, v, o, gate, up, down), each role summed over all blocks
    /// and run in model order so every matrix streams from memory as in a real token: which matrices miss the read rate.
    /// </summary>
    private static void LinearsByRole(LlmShrink.Model.Transformer transformer, float[] x, float[] y, int threads, int reps)
    {
        string[] roles = ["q", "k", "v", "o", "gate", "up", "down"];
        var microseconds = new double[roles.Length];
        var bytes = new long[roles.Length];
        for (int rep = 0; rep < reps; rep++)
            foreach (var block in transformer.Blocks)
            {
                var linears = block.Linears;
                for (int role = 0; role < linears.Length; role++)
                {
                    var l = linears[role];
                    long start = Stopwatch.GetTimestamp();
                    l.Apply(x.AsSpan(0, l.InFeatures), y.AsSpan(0, l.OutFeatures), 1, WorkerPool.Shared, threads);
                    microseconds[role] += Stopwatch.GetElapsedTime(start).TotalMicroseconds;
                    if (rep == 0) bytes[role] += l.WeightBytes;
                }
            }
        Console.WriteLine($"\n| role | layer type | in → out | ms per token (all blocks) | GB/s |");
        Console.WriteLine("|---|---|---|---:|---:|");
        var first = transformer.Blocks[0].Linears;
        for (int role = 0; role < roles.Length; role++)
            Console.WriteLine($"| {roles[role]} | {first[role].GetType().Name} | {first[role].InFeatures} → {first[role].OutFeatures} | {microseconds[role] / reps / 1000:F2} | {bytes[role] * reps / microseconds[role] / 1e3:F1} |");
    }
}

/// <summary>--key value pairs.</summary>
sealed class Options(Dictionary<string, string> values)
{
    public static Options Parse(string[] args)
    {
        var values = new Dictionary<string, string>();
        for (int i = 0; i + 1 < args.Length; i += 2)
        {
            if (!args[i].StartsWith("--")) throw new ArgumentException($"expected --key value, got '{args[i]}'");
            values[args[i][2..]] = args[i + 1];
        }
        return new Options(values);
    }

    public int Int(string key, int fallback) => values.TryGetValue(key, out var text) ? int.Parse(text) : fallback;
    public string Text(string key, string fallback) => values.TryGetValue(key, out var text) ? text : fallback;

    public string? Text(string key) => values.GetValueOrDefault(key);
}
