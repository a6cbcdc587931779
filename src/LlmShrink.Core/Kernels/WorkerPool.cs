namespace LlmShrink.Kernels;

/// <summary>A piece of parallel work: items [begin, end) done by worker number <c>worker</c> (0 = the calling thread).</summary>
public interface IParallelWork
{
    void Execute(int begin, int end, int worker);
}

/// <summary>
/// The process's one pool of compute threads. <see cref="For"/> splits a range of items into chunks that the
/// caller and the workers claim with an atomic counter (so a core that another process steals does not stall
/// the rest), and returns when all are done. Nothing is allocated per call: work is an object the caller keeps.
/// Workers spin briefly between calls (decode issues hundreds of small matmuls per token) and then sleep.
/// </summary>
public sealed class WorkerPool : IDisposable
{
    public static WorkerPool Shared { get; } = new(Environment.ProcessorCount);

    /// <summary>Threads that take part in a call, the caller included.</summary>
    public int Threads { get; }

    private readonly Thread[] _workers;
    private readonly object _gate = new();
    private IParallelWork? _work;
    private int _count, _chunk, _participants;
    private int _next;            // next unclaimed item
    private int _running;         // workers still inside the current call
    private long _generation;     // bumped once per call; workers wait for it to change
    private int _busy;            // 1 while a call is in flight: a second caller runs its work alone
    private bool _stopping;

    private const int SpinsBeforeSleep = 2000;

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
            _work = work;
            _count = count;
            // A few chunks per thread balances load without paying the counter on every item.
            _chunk = Math.Max(1, count / (threads * 4));
            _next = 0;
            _participants = threads - 1;
            _running = _workers.Length; // every worker checks in, even those not taking part
            lock (_gate)
            {
                Interlocked.Increment(ref _generation);
                Monitor.PulseAll(_gate);
            }
            RunChunks(0);
            var spin = new SpinWait();
            while (Volatile.Read(ref _running) > 0) spin.SpinOnce(sleep1Threshold: -1);
            _work = null;
        }
        finally
        {
            Volatile.Write(ref _busy, 0);
        }
    }

    private void RunChunks(int worker)
    {
        var work = _work!;
        while (true)
        {
            int begin = Interlocked.Add(ref _next, _chunk) - _chunk;
            if (begin >= _count) return;
            work.Execute(begin, Math.Min(begin + _chunk, _count), worker);
        }
    }

    private void WorkerLoop(int worker)
    {
        long seen = 0;
        while (true)
        {
            int spins = 0;
            while (Volatile.Read(ref _generation) == seen && spins++ < SpinsBeforeSleep) Thread.SpinWait(20);
            if (Volatile.Read(ref _generation) == seen)
            {
                lock (_gate)
                {
                    while (_generation == seen && !_stopping) Monitor.Wait(_gate);
                }
            }
            if (_stopping) return;
            seen = Volatile.Read(ref _generation);
            if (worker <= _participants) RunChunks(worker);
            Interlocked.Decrement(ref _running);
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
