using System.Diagnostics;
using System.Runtime.InteropServices;
using LlmShrink.Formats;
using LlmShrink.Model.Synthesis;
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
        // Enough calibration that compressing takes several seconds after its temporary folder appears.
        await TerminateOnceWritingAndExpectNothingLeft(temp.Path, "out.tmp-*",
            ["compress", SharedData.TinyLit, "--recipe", "w4g128-gptq", "--calib", "random", "--samples", "128", "--seq-len", "256", "--out", temp.File("out")]);
    }

    [Fact]
    public async Task SigtermDuringGgufExportExitsWith143AndLeavesNothingBehind()
    {
        using var model = new TempDir();
        using var output = new TempDir();
        // tinylit's widths with 32 blocks (27M parameters): Q2_K encoding takes several seconds after the file is opened.
        RandomModel.Write(model.Path, RandomModel.Shape("tinylit") with { NumLayers = 32 }, TensorType.F16, seed: 16);
        await TerminateOnceWritingAndExpectNothingLeft(output.Path, "model.gguf.tmp-*",
            ["export", model.Path, "--format", "gguf", "--type", "Q2_K", "--out", Path.Combine(output.Path, "model.gguf")]);
    }

    /// <summary>
    /// Runs the CLI, sends SIGTERM as soon as an entry matching <paramref name="temporaryPattern"/> appears in
    /// <paramref name="folder"/>, and checks the exit code, the one-line message, and that <paramref name="folder"/> is empty.
    /// </summary>
    private static async Task TerminateOnceWritingAndExpectNothingLeft(string folder, string temporaryPattern, string[] arguments)
    {
        using var process = Process.Start(CliProcess.StartInfo(arguments))!;
        var stderrRead = process.StandardError.ReadToEndAsync();
        var stdoutRead = process.StandardOutput.ReadToEndAsync();
        try
        {
            var waited = Stopwatch.StartNew();
            while (!Directory.EnumerateFileSystemEntries(folder, temporaryPattern).Any())
            {
                if (process.HasExited) Assert.Fail($"{arguments[0]} exited ({process.ExitCode}) before writing anything: {await stderrRead}");
                Assert.True(waited.Elapsed < TimeSpan.FromMinutes(2), $"{arguments[0]} did not start writing within two minutes");
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
        Assert.Empty(Directory.EnumerateFileSystemEntries(folder));
    }
}
