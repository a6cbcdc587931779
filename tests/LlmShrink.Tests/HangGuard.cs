using System.Runtime.ExceptionServices;

namespace LlmShrink.Tests;

/// <summary>
/// Runs a fuzz case on a thread of its own and waits for it at most a given time. Not <c>Task.Run</c>: a task queued on
/// the shared thread pool of a 2-core CI host, busy with the other test classes' parallel work, may not even start
/// within the timeout — CI once reported two "hangs" whose cases had not begun.
/// </summary>
internal static class HangGuard
{
    /// <summary>Whether the body answered within <paramref name="timeout"/>, and its answer; its exceptions are rethrown.</summary>
    public static bool TryRun(Func<string?> body, TimeSpan timeout, out string? answerGiven)
    {
        string? answer = null;
        ExceptionDispatchInfo? escaped = null;
        var thread = new Thread(() =>
        {
            try { answer = body(); }
            catch (Exception e) { escaped = ExceptionDispatchInfo.Capture(e); }
        }) { IsBackground = true, Name = "fuzz case" };
        thread.Start();
        answerGiven = null;
        if (!thread.Join(timeout)) return false;
        escaped?.Throw();
        answerGiven = answer;
        return true;
    }

    /// <summary>The line a fuzz test reports for a case that did not answer.</summary>
    public static string Hang(TimeSpan timeout) => $"no answer within {timeout.TotalSeconds} s (hang)";
}
