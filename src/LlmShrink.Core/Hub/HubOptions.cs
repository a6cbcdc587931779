namespace LlmShrink.Hub;

/// <summary>
/// Everything <see cref="HubResolver"/> needs from the outside world. Tests build one by hand;
/// <see cref="FromEnvironment"/> reads the same environment variables huggingface_hub reads.
/// </summary>
public sealed record HubOptions
{
    public const string DefaultEndpoint = "https://huggingface.co";

    /// <summary>The hub cache folder (holds <c>models--{org}--{name}</c> folders).</summary>
    public required string CacheDir { get; init; }

    /// <summary>Base address of the Hub or a mirror, without a trailing slash.</summary>
    public string Endpoint { get; init; } = DefaultEndpoint;

    /// <summary>Never touch the network: only what is in the cache can be resolved.</summary>
    public bool Offline { get; init; }

    /// <summary>Sent as <c>Authorization: Bearer</c> to the endpoint (never to another host a redirect points at).</summary>
    public string? Token { get; init; }

    /// <summary>
    /// Client to download with. It should not follow redirects itself: the Hub names an LFS file's sha256
    /// in the <c>X-Linked-Etag</c> header of the redirect, which an auto-following client throws away.
    /// Null: the resolver makes its own.
    /// </summary>
    public HttpClient? Http { get; init; }

    /// <summary>A download fails when the server sends nothing for this long (a dead connection must not hang the CLI).</summary>
    public TimeSpan StallTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Told how far each file's download is: (file name, bytes done, total bytes or -1 if unknown).</summary>
    public IProgress<(string File, long Done, long Total)>? Progress { get; init; }

    /// <summary>Settings from HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME, HF_ENDPOINT, HF_HUB_OFFLINE, HF_TOKEN (or the saved token file).</summary>
    public static HubOptions FromEnvironment() => FromVariables(Environment.GetEnvironmentVariable,
        Environment.GetFolderPath(Environment.SpecialFolder.UserProfile));

    /// <summary>The rules of huggingface_hub's constants module, over any source of variables (tests pass a dictionary).</summary>
    public static HubOptions FromVariables(Func<string, string?> variable, string homeDir)
    {
        string? Get(string name) => variable(name) is { Length: > 0 } value ? value : null;
        string Expand(string path) => path == "~" ? homeDir
            : path.StartsWith("~/", StringComparison.Ordinal) ? Path.Combine(homeDir, path[2..]) : path;

        string hfHome = Expand(Get("HF_HOME")
            ?? Path.Combine(Get("XDG_CACHE_HOME") ?? Path.Combine(homeDir, ".cache"), "huggingface"));
        // HUGGINGFACE_HUB_CACHE is the older name of HF_HUB_CACHE, still honoured by huggingface_hub.
        string cacheDir = Expand(Get("HF_HUB_CACHE") ?? Get("HUGGINGFACE_HUB_CACHE") ?? Path.Combine(hfHome, "hub"));

        return new HubOptions
        {
            CacheDir = cacheDir,
            Endpoint = (Get("HF_ENDPOINT") ?? DefaultEndpoint).TrimEnd('/'),
            Offline = IsTrue(Get("HF_HUB_OFFLINE")),
            Token = Get("HF_TOKEN") ?? ReadSavedToken(Expand(Get("HF_TOKEN_PATH") ?? Path.Combine(hfHome, "token"))),
        };
    }

    /// <summary>huggingface_hub's notion of a true flag.</summary>
    private static bool IsTrue(string? value) =>
        value is not null && value.Trim().ToUpperInvariant() is "1" or "TRUE" or "YES" or "ON";

    /// <summary>The token <c>hf auth login</c> saved, if any.</summary>
    private static string? ReadSavedToken(string path)
    {
        if (!File.Exists(path) || new FileInfo(path).Length > 4096) return null;
        string token = File.ReadAllText(path).Trim();
        return token.Length > 0 ? token : null;
    }
}
