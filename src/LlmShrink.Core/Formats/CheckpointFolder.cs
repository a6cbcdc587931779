namespace LlmShrink.Formats;

/// <summary>
/// A folder output that a long run may write several times (periodic checkpoints): each <see cref="Save"/> writes a complete
/// folder into a temporary sibling, then swaps it into place (the previous save is renamed aside, the new one renamed in,
/// the old one deleted), so the target only ever holds a finished save. An interrupted run keeps its last finished save;
/// a run that never saved leaves nothing. The target is checked as <see cref="OutputFolder"/> checks it.
/// </summary>
public sealed class CheckpointFolder(string output, IEnumerable<string> inputs)
{
    private readonly string _target = OutputFolder.CheckTarget(output, inputs);

    /// <summary>Finished saves so far.</summary>
    public int Saves { get; private set; }

    /// <summary>Runs <paramref name="write"/>(temporary folder) and puts the folder it wrote in place of the target.</summary>
    public void Save(Action<string> write)
    {
        string temporary = $"{_target}.tmp-{Guid.NewGuid():N}", previous = $"{_target}.old-{Guid.NewGuid():N}";
        Directory.CreateDirectory(temporary);
        try
        {
            write(temporary);
            if (Directory.Exists(_target))
            {
                if (Directory.EnumerateFileSystemEntries(_target).Any()) Directory.Move(_target, previous);
                else Directory.Delete(_target); // empty, checked at the start
            }
            Directory.Move(temporary, _target);
            Saves++;
        }
        finally
        {
            if (Directory.Exists(temporary)) Directory.Delete(temporary, recursive: true);
            if (Directory.Exists(previous)) Directory.Delete(previous, recursive: true);
        }
    }
}
