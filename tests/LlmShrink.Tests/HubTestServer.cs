using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace LlmShrink.Tests;

/// <summary>
/// A stand-in for the Hugging Face Hub on 127.0.0.1 that serves the files of one local folder as repo
/// <see cref="Repo"/> at commit <see cref="Commit"/>, answering the way the Hub does: the model info endpoint,
/// <c>resolve/</c> with a git-sha1 ETag for small files and, for LFS files, a 302 to a "CDN" path carrying the
/// sha256 in <c>X-Linked-Etag</c>, and a file body from an offset for <c>Range: bytes=N-</c> (206). It records every
/// request path and range, and can misbehave on demand.
/// </summary>
internal sealed class HubTestServer : IDisposable
{
    public const string Commit = "3f1c2a9be0d4c5e6f708192a3b4c5d6e7f809a1b";

    /// <summary>Listed in the model info but must never be requested.</summary>
    public static readonly string[] UnwantedFiles = ["pytorch_model.bin", "onnx/model.onnx", "README.md", "tf_model.h5"];

    public string Repo { get; }
    public string Endpoint { get; }
    public ConcurrentQueue<string> Requests { get; } = new();
    /// <summary>"path bytes=N-" for every request that asked for a range.</summary>
    public ConcurrentQueue<string> RangeRequests { get; } = new();

    /// <summary>When set, the Hub paths answer 401 unless this bearer token is sent.</summary>
    public string? RequiredToken { get; set; }
    /// <summary>The body of this file breaks off halfway (the connection is aborted).</summary>
    public string? DropFile { get; set; }
    /// <summary>The body of this file has one byte flipped.</summary>
    public string? CorruptFile { get; set; }
    /// <summary>The body of this file stops halfway and the connection stays open until the server is disposed.</summary>
    public string? StallFile { get; set; }

    private readonly Dictionary<string, ServedFile> files;
    private readonly HttpListener listener;
    private readonly CancellationTokenSource stopping = new();

    private sealed record ServedFile(string Name, byte[] Bytes, string Sha256, string GitSha1, bool IsLfs);

    public HubTestServer(string folder, string repo = "test-org/tinylit-8m")
    {
        Repo = repo;
        files = Directory.EnumerateFiles(folder).Select(Load).ToDictionary(f => f.Name);
        (listener, Endpoint) = StartListener();
        _ = ServeAsync();
    }

    public string Sha256Of(string file) => files[file].Sha256;
    /// <summary>The ETag the Hub would give: sha256 for LFS files, git blob sha1 for the rest.</summary>
    public string EtagOf(string file) => files[file].IsLfs ? files[file].Sha256 : files[file].GitSha1;

    public int CountRequests(string pathEnd) => Requests.Count(p => p.EndsWith(pathEnd, StringComparison.Ordinal));

    /// <summary>A client like the one the resolver makes: it must follow redirects itself.</summary>
    public static HttpClient NewClient() => new(new SocketsHttpHandler { AllowAutoRedirect = false }) { Timeout = Timeout.InfiniteTimeSpan };

    /// <summary>An address on this machine where nothing listens.</summary>
    public static string UnusedEndpoint() => $"http://127.0.0.1:{FreePort()}";

    // Files the Hub stores in LFS: weights and tokenizer models.
    private static ServedFile Load(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        string name = Path.GetFileName(path);
        // git hashes a blob as sha1("blob {length}\0" + content).
        byte[] header = Encoding.ASCII.GetBytes($"blob {bytes.Length}\0");
        string gitSha1 = Convert.ToHexStringLower(SHA1.HashData([.. header, .. bytes]));
        bool isLfs = name.EndsWith(".safetensors", StringComparison.Ordinal) || name.EndsWith(".model", StringComparison.Ordinal);
        return new ServedFile(name, bytes, Convert.ToHexStringLower(SHA256.HashData(bytes)), gitSha1, isLfs);
    }

    private static int FreePort()
    {
        var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        int port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        return port;
    }

    private static (HttpListener, string) StartListener()
    {
        for (int attempt = 0; ; attempt++)
        {
            string endpoint = $"http://127.0.0.1:{FreePort()}";
            var candidate = new HttpListener();
            candidate.Prefixes.Add(endpoint + "/");
            try { candidate.Start(); return (candidate, endpoint); }
            catch (HttpListenerException) when (attempt < 5) { candidate.Close(); } // the port was taken meanwhile
        }
    }

    private async Task ServeAsync()
    {
        while (!stopping.IsCancellationRequested)
        {
            HttpListenerContext context;
            try { context = await listener.GetContextAsync(); }
            catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException) { return; }
            _ = Task.Run(() => HandleAsync(context));
        }
    }

    private async Task HandleAsync(HttpListenerContext context)
    {
        var response = context.Response;
        try
        {
            string path = Uri.UnescapeDataString(context.Request.Url!.AbsolutePath);
            Requests.Enqueue(path);
            if (context.Request.Headers["Range"] is { } range) RangeRequests.Enqueue($"{path} {range}");

            if (path.StartsWith("/cdn/", StringComparison.Ordinal))
            {
                var lfs = files.Values.FirstOrDefault(f => f.Sha256 == path["/cdn/".Length..]);
                if (lfs is null) { Status(response, 404, "EntryNotFound"); return; }
                response.Headers["ETag"] = "\"cdn-" + lfs.Sha256[..8] + "\""; // a CDN's own etag, not the file's hash
                await SendBodyAsync(context, lfs);
                return;
            }

            if (RequiredToken is not null && context.Request.Headers["Authorization"] != "Bearer " + RequiredToken)
            {
                Status(response, 401, "GatedRepo");
                return;
            }

            string infoPrefix = $"/api/models/{Repo}/revision/";
            string resolvePrefix = $"/{Repo}/resolve/{Commit}/";
            if (path.StartsWith(infoPrefix, StringComparison.Ordinal))
            {
                string revision = path[infoPrefix.Length..];
                if (revision is not ("main" or Commit)) { Status(response, 404, "RevisionNotFound"); return; }
                await SendModelInfoAsync(response);
            }
            else if (path.StartsWith(resolvePrefix, StringComparison.Ordinal)
                     && files.TryGetValue(path[resolvePrefix.Length..], out var file))
            {
                response.Headers["X-Repo-Commit"] = Commit;
                if (file.IsLfs)
                {
                    response.StatusCode = 302;
                    response.Headers["Location"] = "/cdn/" + file.Sha256;
                    response.Headers["X-Linked-Etag"] = "\"" + file.Sha256 + "\"";
                    response.Headers["X-Linked-Size"] = file.Bytes.Length.ToString();
                    response.Close();
                    return;
                }
                response.Headers["ETag"] = "\"" + file.GitSha1 + "\"";
                await SendBodyAsync(context, file);
            }
            else Status(response, 404, path.StartsWith("/api/", StringComparison.Ordinal) ? "RepoNotFound" : "EntryNotFound");
        }
        catch (Exception e) when (e is HttpListenerException or IOException or ObjectDisposedException or OperationCanceledException)
        {
            // The client went away or the server is shutting down.
        }
    }

    private async Task SendModelInfoAsync(HttpListenerResponse response)
    {
        var siblings = files.Keys.Concat(UnwantedFiles).Select(name => new { rfilename = name });
        byte[] json = JsonSerializer.SerializeToUtf8Bytes(new { id = Repo, sha = Commit, siblings });
        response.ContentType = "application/json";
        response.ContentLength64 = json.Length;
        await response.OutputStream.WriteAsync(json, stopping.Token);
        response.Close();
    }

    private async Task SendBodyAsync(HttpListenerContext context, ServedFile file)
    {
        var response = context.Response;
        byte[] bytes = file.Bytes;
        if (context.Request.Headers["Range"] is { } range)
        {
            long from = long.Parse(range["bytes=".Length..^1]); // the resolver only asks "bytes=N-"
            if (from >= bytes.Length) { response.StatusCode = 416; response.Headers["Content-Range"] = $"bytes */{bytes.Length}"; response.Close(); return; }
            response.StatusCode = 206;
            response.Headers["Content-Range"] = $"bytes {from}-{bytes.Length - 1}/{bytes.Length}";
            bytes = bytes[(int)from..];
        }
        response.ContentLength64 = bytes.Length;
        if (file.Name == DropFile || file.Name == StallFile)
        {
            await response.OutputStream.WriteAsync(bytes.AsMemory(0, bytes.Length / 2), stopping.Token);
            await response.OutputStream.FlushAsync(stopping.Token);
            if (file.Name == StallFile) await Task.Delay(Timeout.Infinite, stopping.Token);
            response.Abort();
            return;
        }
        if (file.Name == CorruptFile)
        {
            bytes = (byte[])bytes.Clone();
            bytes[bytes.Length / 3] ^= 0x55;
        }
        await response.OutputStream.WriteAsync(bytes, stopping.Token);
        response.Close();
    }

    private static void Status(HttpListenerResponse response, int status, string hubErrorCode)
    {
        response.StatusCode = status;
        response.Headers["X-Error-Code"] = hubErrorCode;
        response.Close();
    }

    public void Dispose()
    {
        stopping.Cancel();
        listener.Close();
        stopping.Dispose();
    }
}
