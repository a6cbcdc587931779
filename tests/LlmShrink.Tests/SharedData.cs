namespace LlmShrink.Tests;

/// <summary>Paths into <c>../shared</c> beside the repository (models and corpora that are never copied into the repo).</summary>
public static class SharedData
{
    public static string RepoRoot { get; } = FindRepoRoot();

    public static string Root => Path.GetFullPath(Path.Combine(RepoRoot, "..", "shared"));

    public static string Stories260K => Require(Path.Combine(Root, "models", "stories260K", "stories260K.gguf"));
    public static string TinyLit => Require(Path.Combine(Root, "models", "tinylit-8m"));
    /// <summary>tinylit-8m quantized by llama.cpp's llama-quantize: <paramref name="type"/> as in tinylit-TYPE.gguf (Q4_K_M, IQ3_S, …).</summary>
    public static string TinyLitGguf(string type) => Require(Path.Combine(Root, "models", "tinylit-8m-gguf", $"tinylit-{type}.gguf"));
    public static string Corpus(string name) => Require(Path.Combine(Root, "corpora", name));

    /// <summary>A missing shared file fails the test with a clear message; it never silently skips.</summary>
    private static string Require(string path) =>
        File.Exists(path) || Directory.Exists(path) ? path
        : throw new FileNotFoundException($"shared test data missing: {path} (the repository expects ../shared beside it)");

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "LlmShrink.sln"))) return dir.FullName;
        throw new InvalidOperationException("cannot find LlmShrink.sln above " + AppContext.BaseDirectory);
    }
}
