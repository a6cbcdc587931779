using System.Diagnostics;

namespace LlmShrink.Kernels;

/// <summary>A piece of parallel work: items [begin, end) done by worker number <c>worker</c> (0 = the calling thread).</summary>
public interface IParallelWork
{
    void Execute(int begin, int end, int worker);
}

/// <summary>
/// The process's one pool of compute threads. <see cref="For"/> splits a range of items into chunks that the
/// caller and the workers claim from a shared counter, and returns when every item is done. The caller never
/// waits for a worker that has not started: on a busy machine a descheduled worker simply claims nothing, so a
/// call costs at most the work itself. Nothing is allocated per call (the work is an object the caller keeps).
/// Workers spin briefly between calls (decode issues hundreds of small matmuls per token) and then sleep.
/// </summary>
public sealed class WorkerPool : IDisposable
{
    public static WorkerPool Shared { get; } = new(Environment.ProcessorCount);

    /// <summary>Threads that take part in a call, the caller included.</summary>
    public int Threads { get; }

    private readonly Thread[] _workers;
    private readonly object _gate = new();

    // The current call. A claim is a compare-and-swap on _claim = (call number << 32) | next item, so a worker
    // holding a stale view of an earlier call can never claim items of a later one.
    private IParallelWork? _work;
    private int _count, _chunk, _participants;
    private long _claim;
    private int _remaining;       // items not yet finished
    private int _busy;            // 1 while a call is in flight: a second caller runs its work alone
    private bool _stopping;

    private const long Closed = int.MaxValue;
    /// <summary>
    /// How long an idle worker spins for the next call before it sleeps: 100 µs, longer than the gaps between a decode
    /// token's matmuls (norms, RoPE, attention at short contexts). It was 2000 × <c>Thread.SpinWait(20)</c>, 1.5–3.8 ms
    /// here: with other processes on the cores, that spinning cost the caller's own work about half its speed, and two
    /// threads generated 1.6–3.5 tokens/s where one made 4.8–5.8 (load average 6–17, 1B shape, docs/BENCHMARKS.md).
    /// </summary>
    private static readonly long SpinTicks = Stopwatch.Frequency / 10_000;

    public WorkerPool(int threads)
    {
        Threads = Math.Max(1, threads);
        _workers = new Thread[Threads - 1];
        for (int i = 0; i < _workers.Length; i++)
        {
            int worker = i + 1;
            _workers[i] = new Thread(() => WorkerLoop(worker)) { IsBackground = true, Name = $"LlmShrink worker {worker}" };
            _workers[i].Start();
        }
    }

    /// <summary>Runs items [0, <paramref name="count"/>) of <paramref name="work"/> on at most <paramref name="maxThreads"/> threads (0 = all).</summary>
    public void For(int count, IParallelWork work, int maxThreads = 0)
    {
        if (count <= 0) return;
        int threads = maxThreads <= 0 ? Threads : Math.Min(maxThreads, Threads);
        threads = Math.Min(threads, count);
        if (threads == 1 || Interlocked.CompareExchange(ref _busy, 1, 0) != 0)
        {
            work.Execute(0, count, 0);
            return;
        }
        try
        {
            long call = (Volatile.Read(ref _claim) >> 32) + 1;
            _work = work;
            _count = count;
            // A few chunks per thread balances load without paying the counter on every item.
            _chunk = Math.Max(1, count / (threads * 4));
            _participants = threads;
            _remaining = count;
            lock (_gate)
            {
                Interlocked.Exchange(ref _claim, call << 32); // publish: fields above are visible to whoever sees this
                Monitor.PulseAll(_gate);
            }
            RunChunks(0, call);
            var spin = new SpinWait();
            while (Volatile.Read(ref _remaining) > 0) spin.SpinOnce(sleep1Threshold: -1);
            Interlocked.Exchange(ref _claim, (call << 32) | Closed);
            _work = null;
        }
        finally
        {
            Volatile.Write(ref _busy, 0);
        }
    }

    private void RunChunks(int worker, long call)
    {
        while (true)
        {
            long claim = Volatile.Read(ref _claim);
            if (claim >> 32 != call) return;
            int begin = (int)(claim & 0xFFFFFFFF);
            // Read the call's fields, then confirm with the swap that the call is still the one they belong to.
            var work = _work;
            int count = _count, chunk = _chunk;
            if (begin >= count || work is null || worker >= _participants) return;
            int end = Math.Min(begin + chunk, count);
            if (Interlocked.CompareExchange(ref _claim, (call << 32) | (uint)end, claim) != claim) continue;
            work.Execute(begin, end, worker);
            Interlocked.Add(ref _remaining, -(end - begin));
        }
    }

    private void WorkerLoop(int worker)
    {
        long seen = 0;
        while (true)
        {
            long spinUntil = Stopwatch.GetTimestamp() + SpinTicks;
            while (Volatile.Read(ref _claim) >> 32 == seen && Stopwatch.GetTimestamp() < spinUntil) Thread.SpinWait(20);
            if (Volatile.Read(ref _claim) >> 32 == seen)
            {
                lock (_gate)
                {
                    while (_claim >> 32 == seen && !_stopping) Monitor.Wait(_gate);
                }
            }
            if (_stopping) return;
            seen = Volatile.Read(ref _claim) >> 32;
            RunChunks(worker, seen);
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _stopping = true;
            Monitor.PulseAll(_gate);
        }
    }
}
