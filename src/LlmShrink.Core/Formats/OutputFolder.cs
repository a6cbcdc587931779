namespace LlmShrink.Formats;

/// <summary>
/// A folder output written atomically: everything goes into a temporary sibling folder that is renamed into place
/// by <see cref="Commit"/>; disposing without committing deletes it, so an interrupted run leaves nothing half-written.
/// The target must not be an input, contain one, or already hold files.
/// </summary>
public sealed class OutputFolder : IDisposable
{
    private readonly string _target;
    private bool _committed;

    /// <summary>The temporary folder to write into.</summary>
    public string Path { get; }

    public OutputFolder(string output, IEnumerable<string> inputs)
    {
        _target = CheckTarget(output, inputs);
        Path = $"{_target}.tmp-{Guid.NewGuid():N}";
        Directory.CreateDirectory(Path);
    }

    /// <summary>
    /// The full path of <paramref name="output"/> after checking it may be written: not an input nor holding one, not a
    /// file, absent or empty, in an existing parent folder.
    /// </summary>
    public static string CheckTarget(string output, IEnumerable<string> inputs)
    {
        OutputPaths.RefuseFolderOverwrite(output, inputs);
        if (System.IO.File.Exists(output)) throw ShrinkException.InFile(output, "exists and is a file; this command writes a folder");
        if (Directory.Exists(output) && Directory.EnumerateFileSystemEntries(output).Any())
            throw ShrinkException.InFile(output, "exists and is not empty; refusing to mix the output with other files");
        string target = System.IO.Path.GetFullPath(output).TrimEnd(System.IO.Path.DirectorySeparatorChar);
        if (!Directory.Exists(System.IO.Path.GetDirectoryName(target)!)) throw ShrinkException.InFile(output, "cannot write: the parent folder does not exist");
        return target;
    }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Commit()
    {
        if (Directory.Exists(_target)) Directory.Delete(_target); // empty, checked above
        Directory.Move(Path, _target);
        _committed = true;
    }

    public void Dispose()
    {
        if (_committed) return;
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
