namespace LlmShrink.Hub;

/// <summary>
/// One repo's folder in the Hugging Face hub cache, laid out exactly as huggingface_hub lays it out so the
/// two share downloads:
/// <code>
/// {cache}/models--{org}--{name}/
///     refs/{revision}            the commit sha the branch or tag pointed at when last downloaded
///     blobs/{etag}               file contents, named by sha256 (LFS files) or git blob sha1 (others)
///     snapshots/{commit}/{file}  relative symlinks ../../blobs/{etag}
/// </code>
/// </summary>
public sealed class HubCache(string cacheDir, HubId id)
{
    public string RepoDir { get; } = Path.Combine(cacheDir, id.CacheFolderName);

    public string SnapshotDir(string commit) => Path.Combine(RepoDir, "snapshots", commit);
    public string BlobPath(string etag) => Path.Combine(RepoDir, "blobs", etag);
    private string RefPath(string revision) => Path.Combine(RepoDir, "refs", revision);

    /// <summary>The commit a revision stands for locally: a commit sha with a snapshot is itself, a branch or tag is what its ref file says.</summary>
    public string? LocalCommit(string revision)
    {
        if (HubId.IsCommitSha(revision) && Directory.Exists(SnapshotDir(revision))) return revision;
        string refPath = RefPath(revision);
        if (!File.Exists(refPath) || new FileInfo(refPath).Length > 1024) return null;
        string commit = File.ReadAllText(refPath).Trim();
        return HubId.IsCommitSha(commit) ? commit : null;
    }

    /// <summary>The snapshot folder for <paramref name="revision"/> if it holds a loadable model, else null.</summary>
    public string? CompleteSnapshot(string revision) =>
        LocalCommit(revision) is { } commit && IsComplete(SnapshotDir(commit)) ? SnapshotDir(commit) : null;

    /// <summary>config.json plus model.safetensors, or plus the index and every shard it names.</summary>
    public static bool IsComplete(string snapshotDir)
    {
        if (!HasFile(snapshotDir, HubFiles.Config)) return false;
        if (HasFile(snapshotDir, HubFiles.SingleWeights)) return true;
        return HasFile(snapshotDir, HubFiles.WeightIndex)
            && HubFiles.ShardsOf(Path.Combine(snapshotDir, HubFiles.WeightIndex)).All(shard => HasFile(snapshotDir, shard));
    }

    /// <summary>The file is there and, if it is a symlink, its blob is there too.</summary>
    public static bool HasFile(string snapshotDir, string file)
    {
        var info = new FileInfo(Path.Combine(snapshotDir, file));
        if (!info.Exists) return false;
        return info.LinkTarget is null || info.ResolveLinkTarget(returnFinalTarget: true) is { Exists: true };
    }

    /// <summary>Points <c>snapshots/{commit}/{file}</c> at <c>blobs/{etag}</c>.</summary>
    public void Link(string commit, string file, string etag)
    {
        string snapshot = SnapshotDir(commit);
        Directory.CreateDirectory(snapshot);
        string link = Path.Combine(snapshot, file);
        File.Delete(link); // a stale or dangling link from an earlier attempt
        // Relative, like huggingface_hub's, so the cache folder can be moved or mounted elsewhere.
        File.CreateSymbolicLink(link, Path.Combine("..", "..", "blobs", etag));
    }

    /// <summary>Records which commit a branch or tag pointed at; a commit sha needs no ref.</summary>
    public void WriteRef(string revision, string commit)
    {
        if (revision == commit) return;
        Directory.CreateDirectory(Path.Combine(RepoDir, "refs"));
        File.WriteAllText(RefPath(revision), commit);
    }
}
