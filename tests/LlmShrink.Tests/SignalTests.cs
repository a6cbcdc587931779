using System.Diagnostics;
using System.Runtime.InteropServices;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>
/// The CLI as a separate process, stopped by a signal the way a service manager or <c>kill</c> stops it: the
/// in-process tests cannot cover this, because only a real process has signal handlers.
/// </summary>
public partial class SignalTests
{
    private const int Sigterm = 15;

    /// <summary>libc's kill(2): minimal container images have no kill binary to start.</summary>
    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);

    [Fact]
    public async Task SigtermDuringCompressExitsWith143AndLeavesNothingBehind()
    {
        using var temp = new TempDir();
        string output = temp.File("out");
        string cli = Path.Combine(AppContext.BaseDirectory, "llmshrink.dll");
        // The test host runs under the same dotnet that should run the CLI (it may not be on PATH).
        string dotnet = Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet" ? Environment.ProcessPath! : "dotnet";
        // Enough calibration that compressing takes several seconds after its temporary folder appears.
        var start = new ProcessStartInfo(dotnet)
        {
            ArgumentList = { cli, "compress", SharedData.TinyLit, "--recipe", "w4g128-gptq", "--calib", "random", "--samples", "128", "--seq-len", "256", "--out", output },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var process = Process.Start(start)!;
        var stderrRead = process.StandardError.ReadToEndAsync();
        var stdoutRead = process.StandardOutput.ReadToEndAsync();
        try
        {
            var waited = Stopwatch.StartNew();
            while (!Directory.EnumerateDirectories(temp.Path, "out.tmp-*").Any())
            {
                if (process.HasExited) Assert.Fail($"compress exited ({process.ExitCode}) before writing anything: {await stderrRead}");
                Assert.True(waited.Elapsed < TimeSpan.FromMinutes(2), "compress did not start writing within two minutes");
                await Task.Delay(20);
            }
            Assert.Equal(0, Kill(process.Id, Sigterm));
            await process.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(1)); // throws TimeoutException if SIGTERM did not stop it
        }
        finally
        {
            if (!process.HasExited) process.Kill();
        }
        await stdoutRead;
        string stderr = await stderrRead;
        Assert.True(process.ExitCode == 143, $"exit code {process.ExitCode}, stderr: {stderr}");
        Assert.Equal("llmshrink: interrupted", stderr.Trim());
        Assert.Empty(Directory.EnumerateFileSystemEntries(temp.Path));
    }
}
