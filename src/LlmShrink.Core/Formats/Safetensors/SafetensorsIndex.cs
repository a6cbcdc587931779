using System.Text.Json;

namespace LlmShrink.Formats.Safetensors;

/// <summary>
/// A sharded safetensors checkpoint: <c>model.safetensors.index.json</c> whose "weight_map" names, for every
/// tensor, the shard file (beside the index) that holds it. Each shard is opened and mapped once.
/// </summary>
public static class SafetensorsIndex
{
    public const string FileName = "model.safetensors.index.json";

    /// <summary>An index is a small JSON map; anything bigger is not one.</summary>
    private const long MaxIndexBytes = 100L * 1024 * 1024;

    public static TensorSet Load(string indexPath)
    {
        var weightMap = ReadWeightMap(indexPath);
        string folder = Path.GetDirectoryName(Path.GetFullPath(indexPath))!;
        var set = new TensorSet();
        try
        {
            var shards = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
            foreach (var (tensorName, shardName) in weightMap)
            {
                if (!shards.TryGetValue(shardName, out var shard))
                {
                    shard = SafetensorsFile.Open(Path.Combine(folder, shardName));
                    set.AddFile(shard.File);
                    shards.Add(shardName, shard);
                }
                var tensor = shard.Find(tensorName)
                    ?? throw ShrinkException.InFile(shard.Path, $"tensor '{tensorName}' is listed in {indexPath} but missing from this shard");
                set.Add(tensor);
            }
            return set;
        }
        catch { set.Dispose(); throw; }
    }

    /// <summary>Tensor name → shard file name, in index order.</summary>
    private static List<(string Tensor, string Shard)> ReadWeightMap(string indexPath)
    {
        var info = new FileInfo(indexPath);
        if (!info.Exists) throw ShrinkException.InFile(indexPath, "file not found");
        if (info.Length > MaxIndexBytes) throw ShrinkException.InFile(indexPath, $"{info.Length} bytes is too large for a safetensors index");

        JsonDocument document;
        try { document = JsonDocument.Parse(File.ReadAllBytes(indexPath)); }
        catch (JsonException e) { throw ShrinkException.InFile(indexPath, $"not valid JSON ({SafetensorsFile.OneLine(e.Message)})"); }

        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object
                || !document.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw ShrinkException.InFile(indexPath, "missing object 'weight_map'");

            var result = new List<(string, string)>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var entry in map.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.String)
                    throw ShrinkException.InFile(indexPath, $"weight_map entry for '{entry.Name}' is not a file name");
                string shard = entry.Value.GetString()!;
                // Shards live beside the index; a path that climbs out of the folder is never followed.
                if (shard.Length == 0 || Path.GetFileName(shard) != shard || shard is "." or "..")
                    throw ShrinkException.InFile(indexPath, $"weight_map entry for '{entry.Name}' is '{shard}', not a file name beside the index");
                if (!seen.Add(entry.Name))
                    throw ShrinkException.InFile(indexPath, $"tensor '{entry.Name}' appears twice in weight_map");
                result.Add((entry.Name, shard));
            }
            if (result.Count == 0) throw ShrinkException.InFile(indexPath, "weight_map is empty");
            return result;
        }
    }
}
