using Xunit;
using System.Security.Cryptography;
using LlmShrink.Hub;

namespace LlmShrink.Tests;

/// <summary>
/// The resolver against <see cref="HubTestServer"/> on loopback, serving ../shared/models/tinylit-8m.
/// Every call is bounded by a timeout token, so a misbehaving download can fail a test but never hang it.
/// </summary>
public class HubResolverTests
{
    private static readonly HubId TinyLit = new("test-org/tinylit-8m", "main");
    private const string RepoFolder = "models--test-org--tinylit-8m";

    private static CancellationTokenSource Deadline() => new(TimeSpan.FromSeconds(30));

    private static HubResolver Resolver(string cacheDir, string endpoint, bool offline = false, string? token = null,
        IProgress<(string, long, long)>? progress = null, double stallSeconds = 10) =>
        new(new HubOptions
        {
            CacheDir = cacheDir,
            Endpoint = endpoint,
            Offline = offline,
            Token = token,
            Http = HubTestServer.NewClient(),
            Progress = progress,
            StallTimeout = TimeSpan.FromSeconds(stallSeconds),
        });

    private static HubResolver Resolver(TempDir cache, HubTestServer server, string? token = null) =>
        Resolver(cache.Path, server.Endpoint, token: token);

    [Fact]
    public async Task Downloads_into_an_empty_cache_in_the_huggingface_hub_layout()
    {
        using var server = new HubTestServer(SharedData.TinyLit);
        using var cache = new TempDir();
        using var deadline = Deadline();
        var progress = new RecordingProgress();

        string snapshot = await Resolver(cache.Path, server.Endpoint, progress: progress).ResolveAsync(TinyLit, deadline.Token);

        string repoDir = Path.Combine(cache.Path, RepoFolder);
        Assert.Equal(Path.Combine(repoDir, "snapshots", HubTestServer.Commit), snapshot);
        Assert.Equal(HubTestServer.Commit, File.ReadAllText(Path.Combine(repoDir, "refs", "main")));

        // The files are the served ones.
        Assert.Equal(File.ReadAllBytes(Path.Combine(SharedData.TinyLit, "config.json")),
            File.ReadAllBytes(Path.Combine(snapshot, "config.json")));
        var weights = new FileInfo(Path.Combine(SharedData.TinyLit, "model.safetensors"));
        string downloadedWeights = Path.Combine(snapshot, "model.safetensors");
        await using (var stream = File.OpenRead(downloadedWeights)) // FileInfo.Length would measure the symlink
        {
            Assert.Equal(weights.Length, stream.Length);
            Assert.Equal(server.Sha256Of("model.safetensors"), Convert.ToHexStringLower(await SHA256.HashDataAsync(stream)));
        }

        // Every snapshot entry is a relative symlink to blobs/{etag}: sha256 for LFS files, git sha1 for the rest.
        string[] expected = ["config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json"];
        Assert.Equal(expected, Directory.GetFileSystemEntries(snapshot).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        foreach (string file in expected)
        {
            var link = new FileInfo(Path.Combine(snapshot, file));
            Assert.Equal($"../../blobs/{server.EtagOf(file)}", link.LinkTarget);
            Assert.True(File.Exists(Path.Combine(repoDir, "blobs", server.EtagOf(file))));
        }
        Assert.Equal(expected.Select(server.EtagOf).Order(StringComparer.Ordinal),
            Directory.GetFiles(Path.Combine(repoDir, "blobs")).Select(Path.GetFileName).Order(StringComparer.Ordinal));

        // Only the wanted files were fetched, each once, and the pickles and exports never.
        foreach (string file in HubTestServer.UnwantedFiles) Assert.Equal(0, server.CountRequests("/" + file));
        foreach (string file in expected) Assert.Equal(1, server.CountRequests("/resolve/" + HubTestServer.Commit + "/" + file));

        // Progress ends at the full size of each file.
        Assert.Equal((weights.Length, weights.Length), progress.Last("model.safetensors"));
        Assert.Equal((507L, 507L), progress.Last("config.json"));
    }

    [Fact]
    public async Task A_complete_snapshot_resolves_without_any_request()
    {
        using var server = new HubTestServer(SharedData.TinyLit);
        using var cache = new TempDir();
        using var deadline = Deadline();
        string first = await Resolver(cache, server).ResolveAsync(TinyLit, deadline.Token);
        int requests = server.Requests.Count;

        string second = await Resolver(cache, server).ResolveAsync(TinyLit, deadline.Token);
        Assert.Equal(first, second);
        Assert.Equal(requests, server.Requests.Count);

        // A commit sha with a snapshot needs neither the ref nor the network.
        string byCommit = Resolver(cache.Path, HubTestServer.UnusedEndpoint(), offline: true)
            .Resolve(TinyLit with { Revision = HubTestServer.Commit });
        Assert.Equal(first, byCommit);
    }

    [Fact]
    public async Task Offline_resolves_a_populated_cache_and_refuses_an_empty_one()
    {
        using var server = new HubTestServer(SharedData.TinyLit);
        using var cache = new TempDir();
        using var deadline = Deadline();
        var offline = Resolver(cache.Path, server.Endpoint, offline: true);

        var missing = await Assert.ThrowsAsync<ShrinkException>(() => offline.ResolveAsync(TinyLit, deadline.Token));
        Assert.Equal($"test-org/tinylit-8m: not in the Hugging Face cache at {cache.Path} and HF_HUB_OFFLINE is set", missing.Message);
        Assert.Empty(server.Requests);

        string downloaded = await Resolver(cache, server).ResolveAsync(TinyLit, deadline.Token);
        int requests = server.Requests.Count;
        Assert.Equal(downloaded, await offline.ResolveAsync(TinyLit, deadline.Token));
        Assert.Equal(requests, server.Requests.Count);
    }

    [Fact]
    public async Task Unknown_repo_or_revision_is_a_one_line_error()
    {
        using var server = new HubTestServer(SharedData.TinyLit);
        using var cache = new TempDir();
        using var deadline = Deadline();
        var resolver = Resolver(cache, server);

        var noRepo = await Assert.ThrowsAsync<ShrinkException>(
            () => resolver.ResolveAsync(new HubId("test-org/missing", "main"), deadline.Token));
        Assert.Equal("test-org/missing: no such model or revision", noRepo.Message);

        var noRevision = await Assert.ThrowsAsync<ShrinkException>(
            () => resolver.ResolveAsync(TinyLit with { Revision = "v9" }, deadline.Token));
        Assert.Equal("test-org/tinylit-8m@v9: no such model or revision", noRevision.Message);
        Assert.False(Directory.Exists(Path.Combine(cache.Path, RepoFolder, "snapshots")));
    }

    [Fact]
    public async Task A_gated_repo_needs_the_token_and_gets_it_as_a_bearer_header()
    {
        using var server = new HubTestServer(SharedData.TinyLit) { RequiredToken = "hf_secret" };
        using var cache = new TempDir();
        using var deadline = Deadline();

        var gated = await Assert.ThrowsAsync<ShrinkException>(() => Resolver(cache, server).ResolveAsync(TinyLit, deadline.Token));
        Assert.Equal("test-org/tinylit-8m: gated or private: set HF_TOKEN", gated.Message);

        var wrongToken = await Assert.ThrowsAsync<ShrinkException>(
            () => Resolver(cache, server, token: "hf_wrong").ResolveAsync(TinyLit, deadline.Token));
        Assert.StartsWith("test-org/tinylit-8m: access denied with this HF_TOKEN", wrongToken.Message);

        string snapshot = await Resolver(cache, server, token: "hf_secret").ResolveAsync(TinyLit, deadline.Token);
        Assert.True(HubCache.IsComplete(snapshot));
    }

    [Fact]
    public async Task A_connection_dropped_mid_file_leaves_no_blob_or_link_and_a_retry_resumes_only_that_file()
    {
        using var server = new HubTestServer(SharedData.TinyLit) { DropFile = "model.safetensors" };
        using var cache = new TempDir();
        using var deadline = Deadline();
        string repoDir = Path.Combine(cache.Path, RepoFolder);
        string snapshot = Path.Combine(repoDir, "snapshots", HubTestServer.Commit);

        var broken = await Assert.ThrowsAsync<ShrinkException>(() => Resolver(cache, server).ResolveAsync(TinyLit, deadline.Token));
        Assert.StartsWith("test-org/tinylit-8m: model.safetensors: the download broke off: ", broken.Message);
        Assert.EndsWith("; run again to resume", broken.Message);
        Assert.DoesNotContain('\n', broken.Message);

        Assert.False(File.Exists(Path.Combine(snapshot, "model.safetensors")));
        Assert.False(File.Exists(Path.Combine(repoDir, "blobs", server.EtagOf("model.safetensors"))));
        string[] otherBlobs = ["config.json", "tokenizer.model", "tokenizer_config.json"];
        Assert.All(Directory.GetFiles(Path.Combine(repoDir, "blobs")).Select(Path.GetFileName),
            blob => Assert.True(blob!.EndsWith(".incomplete", StringComparison.Ordinal) || otherBlobs.Select(server.EtagOf).Contains(blob)));
        Assert.False(File.Exists(Path.Combine(repoDir, "refs", "main"))); // the branch never points at a partial snapshot
        Assert.Throws<ShrinkException>(() => Resolver(cache.Path, server.Endpoint, offline: true).Resolve(TinyLit));

        string partial = Path.Combine(repoDir, "blobs", server.EtagOf("model.safetensors") + ".incomplete");
        long kept = new FileInfo(partial).Length;
        server.DropFile = null;
        server.Requests.Clear();
        Assert.Equal(snapshot, await Resolver(cache, server).ResolveAsync(TinyLit, deadline.Token));
        // One request learns the etag that names the partial file, the second asks for the rest of it.
        Assert.Equal(2, server.CountRequests("/resolve/" + HubTestServer.Commit + "/model.safetensors"));
        if (kept > 0) Assert.Contains($"/cdn/{server.Sha256Of("model.safetensors")} bytes={kept}-", server.RangeRequests);
        Assert.Equal(0, server.CountRequests("/config.json"));
        Assert.Equal(server.Sha256Of("model.safetensors"),
            Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(Path.Combine(snapshot, "model.safetensors")))));
        Assert.Empty(Directory.GetFiles(Path.Combine(repoDir, "blobs"), "*.incomplete"));
    }

    [Fact]
    public async Task Bytes_that_do_not_match_the_announced_sha256_are_refused()
    {
        using var server = new HubTestServer(SharedData.TinyLit) { CorruptFile = "tokenizer.model" };
        using var cache = new TempDir();
        using var deadline = Deadline();

        var corrupt = await Assert.ThrowsAsync<ShrinkException>(() => Resolver(cache, server).ResolveAsync(TinyLit, deadline.Token));
        Assert.Equal("test-org/tinylit-8m: tokenizer.model: the downloaded bytes do not match the sha256 the server announced", corrupt.Message);
        string repoDir = Path.Combine(cache.Path, RepoFolder);
        Assert.False(File.Exists(Path.Combine(repoDir, "blobs", server.EtagOf("tokenizer.model"))));
        Assert.False(File.Exists(Path.Combine(repoDir, "snapshots", HubTestServer.Commit, "tokenizer.model")));
    }

    [Fact]
    public async Task A_stalled_download_fails_after_the_stall_timeout()
    {
        using var server = new HubTestServer(SharedData.TinyLit) { StallFile = "model.safetensors" };
        using var cache = new TempDir();
        using var deadline = Deadline();

        // Long enough that the files the server does send never look stalled on a busy 2-core CI machine.
        var stalled = await Assert.ThrowsAsync<ShrinkException>(
            () => Resolver(cache.Path, server.Endpoint, stallSeconds: 5).ResolveAsync(TinyLit, deadline.Token));
        Assert.Equal("test-org/tinylit-8m: model.safetensors: the server sent nothing for 5 s; run again to resume", stalled.Message);
        Assert.Single(Directory.GetFiles(Path.Combine(cache.Path, RepoFolder, "blobs"), "*.incomplete")); // kept for the next run
    }

    [Fact]
    public async Task An_unreachable_endpoint_is_a_one_line_error()
    {
        using var cache = new TempDir();
        using var deadline = Deadline();
        string endpoint = HubTestServer.UnusedEndpoint();

        var unreachable = await Assert.ThrowsAsync<ShrinkException>(
            () => Resolver(cache.Path, endpoint).ResolveAsync(TinyLit, deadline.Token));
        Assert.StartsWith($"test-org/tinylit-8m: cannot reach {endpoint}: ", unreachable.Message);
        Assert.DoesNotContain('\n', unreachable.Message);
    }

    [Fact]
    public async Task A_cancelled_download_keeps_its_incomplete_file_and_the_next_run_resumes_it_with_a_range_request()
    {
        using var server = new HubTestServer(SharedData.TinyLit) { StallFile = "model.safetensors" };
        using var cache = new TempDir();
        using var deadline = Deadline();
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(deadline.Token);
        // Cancelled once some bytes are on disk: the server sends half the file, then holds the connection open.
        var cancelMidWeights = new RecordingProgress(onReport: (file, done) => { if (file == "model.safetensors" && done > 0) cancel.Cancel(); });

        await Assert.ThrowsAnyAsync<OperationCanceledException>(
            () => Resolver(cache.Path, server.Endpoint, progress: cancelMidWeights).ResolveAsync(TinyLit, cancel.Token));
        string blobs = Path.Combine(cache.Path, RepoFolder, "blobs");
        string snapshot = Path.Combine(cache.Path, RepoFolder, "snapshots", HubTestServer.Commit);
        Assert.False(File.Exists(Path.Combine(snapshot, "model.safetensors")));
        string partial = Path.Combine(blobs, server.Sha256Of("model.safetensors") + ".incomplete");
        long kept = new FileInfo(partial).Length;
        long size = new FileInfo(Path.Combine(SharedData.TinyLit, "model.safetensors")).Length;
        Assert.InRange(kept, 1, size - 1);

        server.StallFile = null;
        var progress = new RecordingProgress();
        Assert.Equal(snapshot, await Resolver(cache.Path, server.Endpoint, progress: progress).ResolveAsync(TinyLit, deadline.Token));
        // The range goes with every hop; the CDN, which sends the bytes, gets it from where the first run stopped.
        Assert.Contains($"/cdn/{server.Sha256Of("model.safetensors")} bytes={kept}-", server.RangeRequests);
        Assert.All(server.RangeRequests, request => Assert.EndsWith($" bytes={kept}-", request)); // only the weights were partial
        Assert.Equal(server.Sha256Of("model.safetensors"),
            Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(Path.Combine(snapshot, "model.safetensors")))));
        Assert.Equal((size, size), progress.Last("model.safetensors"));
        Assert.Empty(Directory.GetFiles(blobs, "*.incomplete"));
    }

    [Fact]
    public async Task A_sharded_model_fetches_the_index_and_every_shard()
    {
        using var repo = new TempDir();
        File.Copy(Path.Combine(SharedData.TinyLit, "config.json"), repo.File("config.json"));
        File.WriteAllText(repo.File("model.safetensors.index.json"), """
            {"metadata": {"total_size": 24}, "weight_map": {
              "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
              "model.norm.weight": "model-00002-of-00002.safetensors",
              "lm_head.weight": "model-00002-of-00002.safetensors"}}
            """);
        File.WriteAllBytes(repo.File("model-00001-of-00002.safetensors"), [1, 2, 3, 4, 5, 6, 7, 8]);
        File.WriteAllBytes(repo.File("model-00002-of-00002.safetensors"), [9, 10, 11, 12, 13, 14, 15, 16]);
        using var server = new HubTestServer(repo.Path, "test-org/sharded");
        using var cache = new TempDir();
        using var deadline = Deadline();

        string snapshot = await Resolver(cache, server).ResolveAsync(new HubId("test-org/sharded", "main"), deadline.Token);

        Assert.Equal(new byte[] { 9, 10, 11, 12, 13, 14, 15, 16 }, File.ReadAllBytes(Path.Combine(snapshot, "model-00002-of-00002.safetensors")));
        Assert.True(HubCache.IsComplete(snapshot));
        Assert.Equal(1, server.CountRequests("/model-00002-of-00002.safetensors"));

        // A shard lost from the cache makes the snapshot incomplete again.
        File.Delete(Path.Combine(snapshot, "model-00001-of-00002.safetensors"));
        Assert.False(HubCache.IsComplete(snapshot));
    }

    [Fact]
    public async Task A_repo_without_safetensors_weights_is_refused_before_downloading()
    {
        using var repo = new TempDir();
        File.Copy(Path.Combine(SharedData.TinyLit, "config.json"), repo.File("config.json"));
        using var server = new HubTestServer(repo.Path, "test-org/pickles"); // lists pytorch_model.bin only
        using var cache = new TempDir();
        using var deadline = Deadline();

        var refused = await Assert.ThrowsAsync<ShrinkException>(
            () => Resolver(cache, server).ResolveAsync(new HubId("test-org/pickles", "main"), deadline.Token));
        Assert.Equal("test-org/pickles: the repo has no model.safetensors or model.safetensors.index.json " +
                     "(LlmShrink reads safetensors weights only, not PyTorch .bin files)", refused.Message);
        Assert.Single(server.Requests); // the model info, nothing else
    }

    /// <summary>Records reports synchronously (Progress&lt;T&gt; would post them to the thread pool, out of order).</summary>
    private sealed class RecordingProgress(Action<string, long>? onReport = null) : IProgress<(string File, long Done, long Total)>
    {
        private readonly List<(string File, long Done, long Total)> reports = [];

        public void Report((string File, long Done, long Total) value)
        {
            lock (reports) reports.Add(value);
            onReport?.Invoke(value.File, value.Done);
        }

        public (long Done, long Total) Last(string file)
        {
            lock (reports) return reports.Last(r => r.File == file) is var r ? (r.Done, r.Total) : default;
        }
    }
}
