namespace LlmShrink.Hub;

/// <summary>A Hugging Face model id <c>org/name</c> with an optional <c>@revision</c> (branch, tag or commit).</summary>
public sealed record HubId(string Repo, string Revision)
{
    public const string DefaultRevision = "main";

    // The Hub's own limit on the length of an org or repo name.
    private const int MaxPartLength = 96;

    /// <summary>
    /// Accepts <c>org/name</c> or <c>org/name@revision</c> and nothing that looks like a path: the CLI tries
    /// this only after the argument turned out not to be an existing file, so a mistyped path such as
    /// <c>models/llama.gguf</c> or <c>./x/y</c> must come back as "no such file", not as a download attempt.
    /// </summary>
    public static bool TryParse(string text, out HubId id)
    {
        id = null!;
        if (string.IsNullOrEmpty(text)) return false;

        string repo = text, revision = DefaultRevision;
        int at = text.IndexOf('@');
        if (at >= 0)
        {
            repo = text[..at];
            revision = text[(at + 1)..];
            if (!IsValidPart(revision)) return false;
        }

        int slash = repo.IndexOf('/');
        if (slash < 0 || repo.IndexOf('/', slash + 1) >= 0) return false;
        string org = repo[..slash], name = repo[(slash + 1)..];
        if (!IsValidPart(org) || !IsValidPart(name) || LooksLikeFileName(name)) return false;
        // "--" separates org and name in the cache folder name models--{org}--{name}; the Hub forbids it too.
        if (org.Contains("--") || name.Contains("--")) return false;

        id = new HubId(repo, revision);
        return true;
    }

    /// <summary>The id as the user writes it; the default revision is left out.</summary>
    public override string ToString() => Revision == DefaultRevision ? Repo : $"{Repo}@{Revision}";

    /// <summary>Folder of this repo inside the Hugging Face hub cache.</summary>
    public string CacheFolderName => "models--" + Repo.Replace("/", "--");

    /// <summary>True when the revision is a full 40-hex-digit git commit sha rather than a branch or tag.</summary>
    public bool RevisionIsCommit => IsCommitSha(Revision);

    internal static bool IsCommitSha(string text) => text.Length == 40 && text.All(char.IsAsciiHexDigitLower);

    /// <summary>Non-empty, only [A-Za-z0-9._-], not starting with '.' or '-' (so never ".", ".." or "~"-like), no "..".</summary>
    private static bool IsValidPart(string part) =>
        part.Length is > 0 and <= MaxPartLength
        && part[0] is not ('.' or '-')
        && !part.Contains("..")
        && part.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-');

    /// <summary>A name ending like a model or data file was meant as a file path, never a repo.</summary>
    private static bool LooksLikeFileName(string name) =>
        FileExtensions.Any(ext => name.EndsWith(ext, StringComparison.OrdinalIgnoreCase));

    private static readonly string[] FileExtensions =
        [".gguf", ".bin", ".safetensors", ".json", ".model", ".pt", ".pth", ".txt", ".onnx"];
}
