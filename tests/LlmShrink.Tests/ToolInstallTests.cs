using System.Diagnostics;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>
/// The README's install commands, offline: the CLI packs as a .NET tool and installs from that folder alone. Every proxy
/// points at a closed local port, so any attempt to reach nuget.org fails at once instead of passing by luck.
/// </summary>
public class ToolInstallTests
{
#if DEBUG
    private const string Configuration = "Debug";
#else
    private const string Configuration = "Release";
#endif

    [Fact]
    public void The_packed_tool_installs_offline_and_runs_as_llmshrink()
    {
        using var dir = new TempDir();
        string packages = dir.File("nupkg"), tools = dir.File("tools");
        // --no-build: the test run has just built the CLI in this configuration.
        Run("pack", Path.Combine(SharedData.RepoRoot, "src", "LlmShrink.Cli"), "-c", Configuration, "--no-build", "-o", packages);
        Assert.Single(Directory.GetFiles(packages, "LlmShrink.*.nupkg"));
        Run("tool", "install", "--tool-path", tools, "--source", packages, "LlmShrink");

        var inspect = new ProcessStartInfo(Path.Combine(tools, "llmshrink")) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in new[] { "inspect", SharedData.Stories260K, "--json" }) inspect.ArgumentList.Add(a);
        var (code, stdout, stderr) = CliProcess.Run(inspect);
        Assert.True(code == 0, stderr);
        Assert.Contains("\"vocab_size\": 512", stdout);
    }

    private static void Run(params string[] args)
    {
        var start = new ProcessStartInfo(CliProcess.Dotnet) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = SharedData.RepoRoot };
        foreach (string a in args) start.ArgumentList.Add(a);
        foreach (string proxy in new[] { "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy" }) start.Environment[proxy] = "http://127.0.0.1:9";
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        var (code, stdout, stderr) = CliProcess.Run(start);
        Assert.True(code == 0, $"dotnet {string.Join(' ', args)} exited {code}: {stdout} {stderr}");
    }
}
