using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text.Json;

namespace LlmShrink.Hub;

/// <summary>
/// Finds a Hugging Face repo in the local cache (HF_HOME / HF_HUB_CACHE layout), downloading it when missing
/// and allowed. Speaks the same two Hub calls huggingface_hub does:
/// <c>GET {endpoint}/api/models/{repo}/revision/{revision}</c> for the commit sha and the file list, and
/// <c>GET {endpoint}/{repo}/resolve/{commit}/{file}</c> for each file (LFS files answer with a redirect to a CDN
/// whose <c>X-Linked-Etag</c> header is the file's sha256).
/// </summary>
public sealed class HubResolver(HubOptions options)
{
    private const int MaxRedirects = 10;
    // The model info lists every file of the repo; a few megabytes at most even for huge repos.
    private const int MaxModelInfoBytes = 32 << 20;
    private const int CopyBufferBytes = 1 << 20;

    // One client for the process (sockets are pooled); redirects are followed by hand, see HubOptions.Http.
    private static readonly Lazy<HttpClient> DefaultHttp = new(() => new HttpClient(new SocketsHttpHandler
    {
        AllowAutoRedirect = false,
        ConnectTimeout = TimeSpan.FromSeconds(30),
    })
    { Timeout = Timeout.InfiniteTimeSpan }); // HubOptions.StallTimeout bounds each wait instead of the whole download

    private HttpClient Http => options.Http ?? DefaultHttp.Value;
    private readonly Uri endpoint = new(options.Endpoint.TrimEnd('/') + "/");

    public HubOptions Options => options;

    public static HubResolver FromEnvironment() => new(HubOptions.FromEnvironment());

    /// <summary>Local snapshot folder of <paramref name="id"/>.</summary>
    public string Resolve(HubId id) => ResolveAsync(id).GetAwaiter().GetResult();

    /// <summary>
    /// Local snapshot folder of <paramref name="id"/>: straight from the cache when it holds config.json and all
    /// weights (no network at all), else downloaded into the cache unless offline.
    /// </summary>
    public async Task<string> ResolveAsync(HubId id, CancellationToken cancel = default)
    {
        var cache = new HubCache(options.CacheDir, id);
        if (cache.CompleteSnapshot(id.Revision) is { } snapshot) return snapshot;
        if (options.Offline)
            throw new ShrinkException($"{id}: not in the Hugging Face cache at {options.CacheDir} and HF_HUB_OFFLINE is set");
        return await DownloadAsync(id, cache, cancel);
    }

    private async Task<string> DownloadAsync(HubId id, HubCache cache, CancellationToken cancel)
    {
        var (commit, repoFiles) = await FetchModelInfoAsync(id, cancel);
        foreach (string file in HubFiles.Choose(id, repoFiles))
            await FetchFileAsync(id, cache, commit, file, cancel);

        string snapshot = cache.SnapshotDir(commit);
        if (HubCache.HasFile(snapshot, HubFiles.WeightIndex))
            foreach (string shard in HubFiles.ShardsOf(Path.Combine(snapshot, HubFiles.WeightIndex)))
            {
                if (!repoFiles.Contains(shard))
                    throw new ShrinkException($"{id}: {HubFiles.WeightIndex} names {shard}, which the repo does not have");
                await FetchFileAsync(id, cache, commit, shard, cancel);
            }

        // The ref goes last: a branch only points at a snapshot once that snapshot is whole.
        cache.WriteRef(id.Revision, commit);
        return snapshot;
    }

    /// <summary>The commit the revision points at, and the names of all files in the repo at that commit.</summary>
    private async Task<(string Commit, HashSet<string> Files)> FetchModelInfoAsync(HubId id, CancellationToken cancel)
    {
        var uri = new Uri(endpoint, $"api/models/{id.Repo}/revision/{Uri.EscapeDataString(id.Revision)}");
        var (response, _) = await GetAsync(id, "model info", uri, cancel);
        using (response)
        {
            if (!response.IsSuccessStatusCode) throw StatusProblem(id, "model info", response);
            long? length = response.Content.Headers.ContentLength;
            if (length > MaxModelInfoBytes)
                throw new ShrinkException($"{id}: the server's model info is {length} bytes, far more than a model info can be");
            byte[] body = await WithStallTimeout(id, "model info", ct => ReadAtMostAsync(response, MaxModelInfoBytes, ct), cancel)
                ?? throw new ShrinkException($"{id}: the server's model info is larger than {MaxModelInfoBytes} bytes");
            return ParseModelInfo(id, body);
        }
    }

    private static (string Commit, HashSet<string> Files) ParseModelInfo(HubId id, byte[] body)
    {
        try
        {
            using var document = JsonDocument.Parse(body);
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object
                || !root.TryGetProperty("sha", out var sha) || sha.ValueKind != JsonValueKind.String
                || !HubId.IsCommitSha(sha.GetString()!))
                throw new ShrinkException($"{id}: the server's model info has no commit sha");

            var files = new HashSet<string>(StringComparer.Ordinal);
            if (root.TryGetProperty("siblings", out var siblings) && siblings.ValueKind == JsonValueKind.Array)
                foreach (var sibling in siblings.EnumerateArray())
                    if (sibling.ValueKind == JsonValueKind.Object
                        && sibling.TryGetProperty("rfilename", out var name) && name.ValueKind == JsonValueKind.String)
                        files.Add(name.GetString()!);
            return (sha.GetString()!, files);
        }
        catch (JsonException e) { throw new ShrinkException($"{id}: the server's model info is not valid JSON ({e.Message})"); }
    }

    /// <summary>Puts one file into snapshots/{commit}/, downloading its blob unless the cache already has it.</summary>
    private async Task FetchFileAsync(HubId id, HubCache cache, string commit, string file, CancellationToken cancel)
    {
        if (HubCache.HasFile(cache.SnapshotDir(commit), file)) return;

        var uri = new Uri(endpoint, $"{id.Repo}/resolve/{commit}/{Uri.EscapeDataString(file)}");
        var (response, linkedEtag) = await GetAsync(id, file, uri, cancel);
        string etag;
        try
        {
            if (!response.IsSuccessStatusCode) throw StatusProblem(id, file, response);
            etag = BlobName(id, file, linkedEtag ?? RawHeader(response, "ETag"));
            string blob = cache.BlobPath(etag);
            // Same etag, same content: another revision (or huggingface_hub) already fetched it.
            if (!File.Exists(blob))
            {
                // The etag names the partial file of an earlier, interrupted run only once the first answer is in; its
                // body is dropped and the rest asked for from where that run stopped, as huggingface_hub resumes.
                string partial = blob + ".incomplete";
                long resumeFrom = File.Exists(partial) ? new FileInfo(partial).Length : 0;
                if (resumeFrom > 0)
                {
                    response.Dispose();
                    (response, _) = await GetAsync(id, file, uri, cancel, resumeFrom);
                    if (response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable)
                    {
                        // Nothing lies past the partial file: it holds every byte (an earlier run stopped before checking
                        // and renaming it) or more than the file has. Checking it would need the length the 416 omits; start over.
                        response.Dispose();
                        File.Delete(partial);
                        resumeFrom = 0;
                        (response, _) = await GetAsync(id, file, uri, cancel);
                    }
                    if (!response.IsSuccessStatusCode) throw StatusProblem(id, file, response);
                }
                await DownloadBlobAsync(id, file, response, blob, etag, resumeFrom, cancel);
            }
        }
        finally { response.Dispose(); }
        cache.Link(commit, file, etag);
    }

    /// <summary>
    /// Streams the body to blobs/{etag}.incomplete and renames it to blobs/{etag} only once every byte is
    /// there and, for an LFS file, its sha256 matches: a blob under its final name is always whole. An interrupted
    /// download (cancelled, broken off, stalled) keeps its .incomplete file, as the Hub cache does, for the next run to
    /// resume from; bytes that prove wrong are deleted. <paramref name="resumeFrom"/> is the length of that file when
    /// <paramref name="response"/> answers a range request for the rest.
    /// </summary>
    private async Task DownloadBlobAsync(HubId id, string file, HttpResponseMessage response, string blob, string etag,
        long resumeFrom, CancellationToken cancel)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(blob)!);
        string temp = blob + ".incomplete";
        // A server that ignores the range sends the whole file (200), which then replaces the partial one.
        bool resumed = resumeFrom > 0 && response.StatusCode == HttpStatusCode.PartialContent
            && response.Content.Headers.ContentRange is { From: { } from, HasLength: true } && from == resumeFrom;
        if (response.StatusCode == HttpStatusCode.PartialContent && !resumed)
            throw new ShrinkException($"{id}: {file}: the server sent a different part of the file than the {resumeFrom} bytes on asked for");
        long done = resumed ? resumeFrom : 0;
        long total = resumed ? response.Content.Headers.ContentRange!.Length!.Value
            : response.Content.Headers.ContentLength ?? -1;
        try
        {
            using var sha256 = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            if (resumed) await HashFileAsync(sha256, temp, cancel);
            long reported = done;
            options.Progress?.Report((file, done, total));
            await using (var output = new FileStream(temp, resumed ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16, useAsync: true))
            await using (var input = await response.Content.ReadAsStreamAsync(cancel))
            {
                using var stall = CancellationTokenSource.CreateLinkedTokenSource(cancel);
                var buffer = new byte[CopyBufferBytes];
                while (true)
                {
                    stall.CancelAfter(options.StallTimeout); // restarts the clock for every read
                    int read = await input.ReadAsync(buffer, stall.Token);
                    if (read == 0) break;
                    sha256.AppendData(buffer, 0, read);
                    await output.WriteAsync(buffer.AsMemory(0, read), cancel);
                    done += read;
                    if (done - reported >= CopyBufferBytes) { options.Progress?.Report((file, done, total)); reported = done; }
                }
            }
            if (total >= 0 && done != total)
                throw new ShrinkException($"{id}: {file}: the download ended after {done} of {total} bytes; run again to resume it");
            if (IsSha256(etag) && Convert.ToHexStringLower(sha256.GetHashAndReset()) != etag)
            {
                File.Delete(temp);
                throw new ShrinkException($"{id}: {file}: the downloaded bytes do not match the sha256 the server announced");
            }
            File.Move(temp, blob, overwrite: true);
            options.Progress?.Report((file, done, total));
        }
        catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
        {
            throw new ShrinkException($"{id}: {file}: the server sent nothing for {options.StallTimeout.TotalSeconds:0} s; run again to resume");
        }
        catch (Exception e) when (e is IOException or HttpRequestException)
        {
            throw new ShrinkException($"{id}: {file}: the download broke off: {OneLine(e.Message)}; run again to resume", e);
        }
    }

    /// <summary>Feeds the bytes an earlier run downloaded to the hash, so the whole file is checked once it is complete.</summary>
    private static async Task HashFileAsync(IncrementalHash hash, string path, CancellationToken cancel)
    {
        await using var input = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, useAsync: true);
        var buffer = new byte[CopyBufferBytes];
        int read;
        while ((read = await input.ReadAsync(buffer, cancel)) > 0) hash.AppendData(buffer, 0, read);
    }

    /// <summary>
    /// GET following redirects by hand, so the <c>X-Linked-Etag</c> of the Hub's redirect is not lost and the
    /// token is never sent to another host (the CDN gets a presigned address instead).
    /// </summary>
    /// <param name="from">When positive, asks for the bytes from this offset on (<c>Range: bytes=from-</c>, on every hop).</param>
    private async Task<(HttpResponseMessage Response, string? LinkedEtag)> GetAsync(HubId id, string what, Uri uri,
        CancellationToken cancel, long from = 0)
    {
        string? linkedEtag = null;
        for (int hop = 0; ; hop++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, uri);
            request.Headers.UserAgent.ParseAdd("llmshrink/1.0");
            if (from > 0) request.Headers.Range = new RangeHeaderValue(from, null);
            if (options.Token is { } token && SameOrigin(uri, endpoint))
                request.Headers.Authorization = new("Bearer", token);

            HttpResponseMessage response;
            try
            {
                response = await WithStallTimeout(id, what,
                    ct => Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct), cancel);
            }
            catch (HttpRequestException e)
            {
                throw new ShrinkException($"{id}: cannot reach {uri.GetLeftPart(UriPartial.Authority)}: {OneLine(e.Message)}", e);
            }

            linkedEtag ??= RawHeader(response, "X-Linked-Etag");
            if ((int)response.StatusCode is not (301 or 302 or 303 or 307 or 308)) return (response, linkedEtag);

            Uri? location = response.Headers.Location;
            response.Dispose();
            if (location is null) throw new ShrinkException($"{id}: {what}: the server redirected without saying where");
            if (hop == MaxRedirects) throw new ShrinkException($"{id}: {what}: more than {MaxRedirects} redirects");
            uri = new Uri(uri, location);
        }
    }

    /// <summary>Runs one network wait, turning "nothing for StallTimeout" into a clear error (the caller's own cancel still cancels).</summary>
    private async Task<T> WithStallTimeout<T>(HubId id, string what, Func<CancellationToken, Task<T>> wait, CancellationToken cancel)
    {
        using var stall = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        stall.CancelAfter(options.StallTimeout);
        try { return await wait(stall.Token); }
        catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
        {
            throw new ShrinkException($"{id}: {what}: no answer from {options.Endpoint} for {options.StallTimeout.TotalSeconds:0} s");
        }
    }

    /// <summary>The whole body, or null if it is longer than <paramref name="limit"/> (never buffers more than that).</summary>
    private static async Task<byte[]?> ReadAtMostAsync(HttpResponseMessage response, int limit, CancellationToken cancel)
    {
        await using var input = await response.Content.ReadAsStreamAsync(cancel);
        using var body = new MemoryStream();
        var buffer = new byte[64 << 10];
        int read;
        while ((read = await input.ReadAsync(buffer, cancel)) > 0)
        {
            if (body.Length + read > limit) return null;
            body.Write(buffer, 0, read);
        }
        return body.ToArray();
    }

    private ShrinkException StatusProblem(HubId id, string what, HttpResponseMessage response)
    {
        int status = (int)response.StatusCode;
        return new ShrinkException(status switch
        {
            // The Hub answers 401 for a repo that does not exist too, so as not to reveal private ones.
            401 when RawHeader(response, "X-Error-Code") == "RepoNotFound" && options.Token is null =>
                $"{id}: no such model, or gated or private: set HF_TOKEN",
            401 or 403 when options.Token is null => $"{id}: gated or private: set HF_TOKEN",
            401 or 403 => $"{id}: access denied with this HF_TOKEN (for a gated model, accept its terms on the model page)",
            404 => $"{id}: no such model or revision",
            _ => $"{id}: {what}: HTTP {status} {response.ReasonPhrase}".TrimEnd(),
        });
    }

    /// <summary>
    /// The blob file name for an etag header, normalised like huggingface_hub (weak prefix and quotes removed).
    /// It comes from the network and becomes a file name, so it must be a plain token.
    /// </summary>
    private static string BlobName(HubId id, string file, string? etagHeader)
    {
        if (etagHeader is null) throw new ShrinkException($"{id}: {file}: the server sent no ETag to name the file by");
        string etag = etagHeader.Trim();
        if (etag.StartsWith("W/", StringComparison.Ordinal)) etag = etag[2..];
        etag = etag.Trim('"');
        if (!HubFiles.IsPlainFileName(etag) || etag.EndsWith(".incomplete", StringComparison.Ordinal))
            throw new ShrinkException($"{id}: {file}: the server sent an unusable ETag");
        return etag;
    }

    private static bool IsSha256(string etag) => etag.Length == 64 && etag.All(char.IsAsciiHexDigitLower);

    private static string? RawHeader(HttpResponseMessage response, string name) =>
        response.Headers.NonValidated.TryGetValues(name, out var values) ? values.FirstOrDefault() : null;

    private static bool SameOrigin(Uri a, Uri b) =>
        a.Scheme == b.Scheme && string.Equals(a.Host, b.Host, StringComparison.OrdinalIgnoreCase) && a.Port == b.Port;

    private static string OneLine(string text) => text.ReplaceLineEndings(" ");
}
