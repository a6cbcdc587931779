namespace LlmShrink.Tests;

/// <summary>
/// What one in-process CLI run writes, while other tests run beside it. Console.Out and Console.Error are process-wide,
/// so replacing them per test lets a parallel test's capture swallow another's output (CI saw exactly that: an empty
/// stdout). Instead they are replaced once, by writers that hand each write to the capture of the execution flow that
/// made it — threads and tasks a command starts inherit that flow, so their writes land in the same capture.
/// </summary>
internal static class CapturedConsole
{
    private static readonly AsyncLocal<StringWriter?> Stdout = new(), Stderr = new();

    static CapturedConsole()
    {
        Console.SetOut(new FlowWriter(Stdout, Console.Out));
        Console.SetError(new FlowWriter(Stderr, Console.Error));
    }

    /// <summary>Runs <paramref name="command"/> with this flow's console writes captured.</summary>
    public static (T Result, string Stdout, string Stderr) Run<T>(Func<T> command)
    {
        var (stdout, stderr) = (new StringWriter(), new StringWriter());
        (Stdout.Value, Stderr.Value) = (stdout, stderr);
        try { return (command(), stdout.ToString(), stderr.ToString()); }
        finally { (Stdout.Value, Stderr.Value) = (null, null); }
    }

    /// <summary>Writes to the current flow's capture, or to the real console outside any capture.</summary>
    private sealed class FlowWriter(AsyncLocal<StringWriter?> capture, TextWriter console) : TextWriter
    {
        private TextWriter Target => capture.Value ?? console;
        public override System.Text.Encoding Encoding => console.Encoding;
        public override void Write(char value) => Target.Write(value);
        public override void Write(string? value) => Target.Write(value);
        public override void Write(char[] buffer, int index, int count) => Target.Write(buffer, index, count);
        public override void Write(ReadOnlySpan<char> buffer) => Target.Write(buffer);
        public override void Flush() => Target.Flush();
    }
}
