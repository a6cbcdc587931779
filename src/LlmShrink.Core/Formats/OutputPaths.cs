namespace LlmShrink.Formats;

/// <summary>
/// Where outputs may go: never onto a file the export is reading from (an atomic rename over a memory-mapped input
/// would leave the reader mapped to a deleted file, and a non-atomic write would corrupt it mid-read). Paths are
/// compared after resolving every symbolic link along them, so <c>out.gguf → model.gguf</c> is caught too.
/// </summary>
public static class OutputPaths
{
    /// <summary>Symbolic links are followed at most this deep, so a link cycle cannot hang the resolution.</summary>
    private const int MaxLinkDepth = 40;

    /// <summary>The absolute path with every symbolic link (in any component) resolved; the last components may not exist yet.</summary>
    public static string RealPath(string path) => RealPath(Path.GetFullPath(path), 0);

    private static string RealPath(string full, int depth)
    {
        if (depth > MaxLinkDepth) throw ShrinkException.InFile(full, "too many levels of symbolic links");
        string? parent = Path.GetDirectoryName(full);
        if (parent is null) return full; // the root
        string candidate = Path.Combine(RealPath(parent, depth), Path.GetFileName(full));
        FileSystemInfo info = Directory.Exists(candidate) ? new DirectoryInfo(candidate) : new FileInfo(candidate);
        if (info.LinkTarget is null) return candidate;
        string target = Path.IsPathRooted(info.LinkTarget) ? info.LinkTarget : Path.Combine(Path.GetDirectoryName(candidate)!, info.LinkTarget);
        return RealPath(Path.GetFullPath(target), depth + 1);
    }

    /// <summary>Throws a user error naming <paramref name="output"/> when it is, after links are resolved, one of <paramref name="inputs"/>.</summary>
    public static void RefuseOverwrite(string output, IEnumerable<string> inputs)
    {
        string real = RealPath(output);
        foreach (string input in inputs)
            if (string.Equals(real, RealPath(input), StringComparison.Ordinal))
                throw ShrinkException.InFile(output, $"refusing to overwrite an input file ({input})");
    }

    /// <summary>Throws when <paramref name="output"/> is an input folder, or an input file lies inside it.</summary>
    public static void RefuseFolderOverwrite(string output, IEnumerable<string> inputs)
    {
        string real = RealPath(output).TrimEnd(Path.DirectorySeparatorChar) + Path.DirectorySeparatorChar;
        foreach (string input in inputs)
        {
            string inputReal = RealPath(input).TrimEnd(Path.DirectorySeparatorChar) + Path.DirectorySeparatorChar;
            if (inputReal.StartsWith(real, StringComparison.Ordinal) || real == inputReal)
                throw ShrinkException.InFile(output, $"refusing to write over an input ({input})");
        }
    }
}
