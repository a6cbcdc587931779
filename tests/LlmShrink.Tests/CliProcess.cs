using System.Diagnostics;

namespace LlmShrink.Tests;

/// <summary>The CLI (or dotnet itself) as a separate process: for what only a real process has — signal handlers, its own peak memory.</summary>
internal static class CliProcess
{
    /// <summary>The dotnet running the test host, which should run the CLI too (it may not be on PATH).</summary>
    public static string Dotnet { get; } = Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet" ? Environment.ProcessPath! : "dotnet";

    /// <summary><c>dotnet llmshrink.dll ARGS</c> with both outputs redirected.</summary>
    public static ProcessStartInfo StartInfo(params string[] arguments)
    {
        var start = new ProcessStartInfo(Dotnet) { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "llmshrink.dll"));
        foreach (string argument in arguments) start.ArgumentList.Add(argument);
        return start;
    }

    /// <summary>Runs <paramref name="start"/> (outputs redirected) to the end.</summary>
    public static (int ExitCode, string Stdout, string Stderr) Run(ProcessStartInfo start)
    {
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, stdout, stderr.Result);
    }
}
