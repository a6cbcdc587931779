using System.Diagnostics;
using System.Runtime.InteropServices;
using Xunit;

namespace LlmShrink.Tests;

/// <summary><c>llmshrink distill --save-every</c> as a separate process stopped by SIGTERM: it keeps the last finished checkpoint.</summary>
public partial class DistillSignalTests
{
    private const int Sigterm = 15;

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);

    [Fact]
    public async Task Sigterm_during_distill_keeps_the_last_finished_checkpoint_and_nothing_half_written()
    {
        using var temp = new TempDir();
        string teacher = DistillCommandTests.RandomFolder(temp, "teacher", 1), student = DistillCommandTests.RandomFolder(temp, "student", 2);
        string output = temp.File("out");
        using var process = Process.Start(CliProcess.StartInfo("distill", "--teacher", teacher, "--student", student, "--data", SharedData.Corpus("tinylit_calib.txt"),
            "--steps", "1000000", "--batch", "1", "--seq-len", "8", "--save-every", "2", "--out", output))!;
        var stderrRead = process.StandardError.ReadToEndAsync();
        var stdoutRead = process.StandardOutput.ReadToEndAsync();
        try
        {
            var waited = Stopwatch.StartNew();
            while (!File.Exists(Path.Combine(output, "report.md")))
            {
                if (process.HasExited) Assert.Fail($"distill exited ({process.ExitCode}) before its first checkpoint: {await stderrRead}");
                Assert.True(waited.Elapsed < TimeSpan.FromMinutes(2), "distill wrote no checkpoint within two minutes");
                await Task.Delay(20);
            }
            Assert.Equal(0, Kill(process.Id, Sigterm));
            await process.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(1));
        }
        finally
        {
            if (!process.HasExited) process.Kill();
        }
        await stdoutRead;
        string stderr = await stderrRead;
        Assert.True(process.ExitCode == 143, $"exit code {process.ExitCode}, stderr: {stderr}");
        Assert.EndsWith("llmshrink: interrupted", stderr.Trim());
        Assert.Equal(["out", "student", "teacher"], Directory.EnumerateFileSystemEntries(temp.Path).Select(Path.GetFileName).Order());
        Assert.Matches(@"\| steps \| \d*[02468] of 1000000,", File.ReadAllText(Path.Combine(output, "report.md")));
        using var model = Model.ModelLoader.Load(output);
    }
}
