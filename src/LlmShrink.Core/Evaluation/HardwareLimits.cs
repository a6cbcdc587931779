using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LlmShrink.Evaluation;

/// <summary>
/// What this machine can do at most, measured in-process so that a benchmark can say how close it came (the
/// roofline model: a kernel is bound either by memory traffic or by arithmetic). Generation streams every weight
/// once per token, so its ceiling is <see cref="ReadGBps"/>; a long prompt is arithmetic, so its ceiling is
/// <see cref="FmaGflops"/>.
/// </summary>
/// <param name="Threads">Threads that ran each measurement at once.</param>
/// <param name="CopyGBps">Copying a buffer far larger than the last-level cache: bytes read plus bytes written per second, in 1e9.</param>
/// <param name="ReadGBps">Summing such a buffer: bytes read per second, in 1e9.</param>
/// <param name="FmaGflops">Independent chains of 512-bit float32 fused multiply-adds: 2 flops per lane per FMA, in 1e9 per second.</param>
public sealed record HardwareLimits(int Threads, double CopyGBps, double ReadGBps, double FmaGflops)
{
    /// <summary>Default buffer: 256 MiB each way, eight times a 32 MiB L3, so caches cannot hold any of it.</summary>
    public const long DefaultBufferBytes = 256L << 20;

    /// <summary>
    /// Measures on <paramref name="threads"/> threads; each figure is the best of <paramref name="repeats"/> runs (the
    /// best is the one least disturbed by other processes). The buffers are touched before timing so page faults are not timed.
    /// </summary>
    public static HardwareLimits Measure(int threads, long bufferBytes = DefaultBufferBytes, long fmasPerThread = 100_000_000, int repeats = 3)
    {
        if (threads < 1) throw new ArgumentOutOfRangeException(nameof(threads), "at least one thread");
        if (bufferBytes < 64 * threads) throw new ArgumentOutOfRangeException(nameof(bufferBytes), "buffer too small to split");
        long floats = bufferBytes / sizeof(float) / (16 * threads) * 16 * threads; // whole vectors per thread
        var source = GC.AllocateUninitializedArray<float>(checked((int)floats), pinned: true);
        var target = GC.AllocateUninitializedArray<float>(source.Length, pinned: true);
        // Distinct values on every page: pages of identical content can be merged by the host (KSM under a hypervisor),
        // and then "reading 256 MiB" reads one page from cache — readings of 93 GB/s on this 2-core VM came from that.
        for (int i = 0; i < source.Length; i++) source[i] = i;
        target.AsSpan().Clear();
        long bytes = floats * sizeof(float);

        double copy = 0, read = 0, fma = 0;
        for (int r = 0; r < repeats; r++)
        {
            copy = Math.Max(copy, 2.0 * bytes / OnThreads(threads, t => Copy(source, target, t, threads)) / 1e9);
            read = Math.Max(read, bytes / OnThreads(threads, t => Sum(source, t, threads)) / 1e9);
            fma = Math.Max(fma, FlopsPerFma * fmasPerThread * threads / OnThreads(threads, _ => FmaChains(fmasPerThread)) / 1e9);
        }
        return new HardwareLimits(threads, copy, read, fma);
    }

    /// <summary>A Vector512 FMA does 16 multiplies and 16 adds.</summary>
    private const double FlopsPerFma = 2 * 16;

    /// <summary>
    /// Runs <paramref name="work"/>(t) for t in [0, threads) on that many threads started together; returns the seconds
    /// from the first thread's start to the last one's end. Each thread reads the clock itself: timed from the starting
    /// thread, a third thread on two cores could be descheduled after releasing the workers and start its clock late
    /// (one reading said 383 GB/s).
    /// </summary>
    private static double OnThreads(int threads, Action<int> work)
    {
        using var start = new Barrier(threads);
        var workers = new Thread[threads];
        var begun = new long[threads];
        var ended = new long[threads];
        for (int t = 0; t < threads; t++)
        {
            int id = t;
            workers[t] = new Thread(() =>
            {
                start.SignalAndWait();
                begun[id] = Stopwatch.GetTimestamp();
                work(id);
                ended[id] = Stopwatch.GetTimestamp();
            }) { IsBackground = true };
            workers[t].Start();
        }
        foreach (var w in workers) w.Join();
        return Math.Max(Stopwatch.GetElapsedTime(begun.Min(), ended.Max()).TotalSeconds, 1e-9);
    }

    private static void Copy(float[] source, float[] target, int part, int parts)
    {
        int length = source.Length / parts;
        source.AsSpan(part * length, length).CopyTo(target.AsSpan(part * length, length));
    }

    /// <summary>
    /// Reads the thread's part as four streams at once (its four quarters), the way a matrix-vector product walks four
    /// weight rows: one stream per core leaves the hardware prefetchers under-used and measured up to 20 % less than the
    /// kernels themselves then reached. One accumulator per stream, so only the loads limit speed.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static unsafe float Sum(float[] source, int part, int parts)
    {
        int length = source.Length / parts, quarter = length / 4 / 16 * 16;
        Vector512<float> a = default, b = default, c = default, d = default;
        fixed (float* start = &source[part * length])
        {
            float* p0 = start, p1 = start + quarter, p2 = start + 2 * quarter, p3 = start + 3 * quarter;
            for (int k = 0; k < quarter; k += 16)
            {
                a += Vector512.Load(p0 + k); b += Vector512.Load(p1 + k);
                c += Vector512.Load(p2 + k); d += Vector512.Load(p3 + k);
            }
            for (int k = 4 * quarter; k < length; k++) a += Vector512.CreateScalar(start[k]);
        }
        return Vector512.Sum(a + b + c + d);
    }

    /// <summary>The higher of each figure of two measurements (the machine's limit is what it reached at its best).</summary>
    public HardwareLimits Best(HardwareLimits other) =>
        new(Threads, Math.Max(CopyGBps, other.CopyGBps), Math.Max(ReadGBps, other.ReadGBps), Math.Max(FmaGflops, other.FmaGflops));

    /// <summary>
    /// Eight independent FMA chains: enough to cover the FMA latency (4 cycles on Zen 4) times its issue rate, so the
    /// units never stall. Multiplying by a value just below 1 and adding a small one keeps every lane finite.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float FmaChains(long fmas)
    {
        var m = Vector512.Create(0.999999f);
        var s = Vector512.Create(1e-6f);
        Vector512<float> c0 = Vector512.Create(1f), c1 = c0 + s, c2 = c1 + s, c3 = c2 + s, c4 = c3 + s, c5 = c4 + s, c6 = c5 + s, c7 = c6 + s;
        for (long i = 0; i < fmas; i += 8)
        {
            c0 = Vector512.FusedMultiplyAdd(c0, m, s); c1 = Vector512.FusedMultiplyAdd(c1, m, s);
            c2 = Vector512.FusedMultiplyAdd(c2, m, s); c3 = Vector512.FusedMultiplyAdd(c3, m, s);
            c4 = Vector512.FusedMultiplyAdd(c4, m, s); c5 = Vector512.FusedMultiplyAdd(c5, m, s);
            c6 = Vector512.FusedMultiplyAdd(c6, m, s); c7 = Vector512.FusedMultiplyAdd(c7, m, s);
        }
        return Vector512.Sum(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7);
    }
}
