using System.Runtime.CompilerServices;

namespace LlmShrink.Tests;

/// <summary>
/// xunit runs the test classes in parallel on the shared thread pool, and many tests hold a pool thread for seconds of
/// computation. On a 2-core host the pool then adds threads slowly, and asynchronous work queued behind them — the
/// loopback Hub server's handlers and HttpClient's continuations — once waited past the resolver's 10 s stall timeout
/// (HubResolverTests, a full run on this machine). Enough threads from the start; the kernels' own workers are
/// dedicated threads (<see cref="LlmShrink.Kernels.WorkerPool"/>), so this adds no compute threads.
/// </summary>
internal static class TestHostThreads
{
    private const int MinimumThreads = 64;

#pragma warning disable CA2255 // a module initializer in a test assembly: it configures the test host, which is the intent
    [ModuleInitializer]
    internal static void Initialize()
    {
        ThreadPool.GetMinThreads(out int workers, out int io);
        ThreadPool.SetMinThreads(Math.Max(workers, MinimumThreads), Math.Max(io, MinimumThreads));
    }
#pragma warning restore CA2255
}
