using System.Text.Json;

namespace LlmShrink.Hub;

/// <summary>
/// Which files of a Hugging Face repo LlmShrink needs: the config, the tokenizer, and the safetensors weights
/// (one file, or an index plus the shards it names). PyTorch pickles, TF/Flax/ONNX exports and everything in
/// subfolders are never fetched: they can be many gigabytes and LlmShrink cannot read them.
/// </summary>
public static class HubFiles
{
    public const string Config = "config.json";
    public const string SingleWeights = "model.safetensors";
    public const string WeightIndex = "model.safetensors.index.json";

    /// <summary>Small files fetched when the repo has them.</summary>
    public static readonly IReadOnlyList<string> Companions =
    [
        "generation_config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
    ];

    // An index is a few hundred kilobytes even for the largest models; anything far bigger is not an index.
    private const long MaxIndexBytes = 64L << 20;

    /// <summary>
    /// The files to download out of the repo's file list, config first, weights last; the shards of a sharded
    /// model come later from <see cref="ShardsOf"/> once the index is here.
    /// Throws when the repo has no config.json or no safetensors weights, before anything is downloaded.
    /// </summary>
    public static List<string> Choose(HubId id, IReadOnlyCollection<string> repoFiles)
    {
        var present = repoFiles.Where(IsPlainFileName).ToHashSet(StringComparer.Ordinal);
        if (!present.Contains(Config)) throw new ShrinkException($"{id}: the repo has no {Config}");

        var chosen = new List<string> { Config };
        chosen.AddRange(Companions.Where(present.Contains));
        if (present.Contains(WeightIndex)) chosen.Add(WeightIndex);
        else if (present.Contains(SingleWeights)) chosen.Add(SingleWeights);
        else throw new ShrinkException(
            $"{id}: the repo has no {SingleWeights} or {WeightIndex} (LlmShrink reads safetensors weights only, not PyTorch .bin files)");
        return chosen;
    }

    /// <summary>The distinct shard files named by the <c>weight_map</c> of a safetensors index.</summary>
    public static IReadOnlyList<string> ShardsOf(string indexPath)
    {
        // The stream's length, not FileInfo.Length: in a snapshot the index is a symlink, and FileInfo measures the link.
        using var stream = File.OpenRead(indexPath);
        if (stream.Length > MaxIndexBytes)
            throw ShrinkException.InFile(indexPath, $"{stream.Length} bytes is far too large for a safetensors index");

        JsonElement weightMap;
        try
        {
            using var document = JsonDocument.Parse(stream);
            if (document.RootElement.ValueKind != JsonValueKind.Object
                || !document.RootElement.TryGetProperty("weight_map", out weightMap)
                || weightMap.ValueKind != JsonValueKind.Object)
                throw ShrinkException.InFile(indexPath, "no \"weight_map\" object");
            weightMap = weightMap.Clone();
        }
        catch (JsonException e) { throw ShrinkException.InFile(indexPath, $"not valid JSON ({e.Message})"); }

        var shards = new List<string>();
        foreach (var entry in weightMap.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.String)
                throw ShrinkException.InFile(indexPath, $"weight_map entry \"{entry.Name}\" is not a file name");
            string shard = entry.Value.GetString()!;
            if (!IsPlainFileName(shard) || !shard.EndsWith(".safetensors", StringComparison.Ordinal))
                throw ShrinkException.InFile(indexPath, $"weight_map names \"{shard}\", not a .safetensors file beside the index");
            if (!shards.Contains(shard)) shards.Add(shard);
        }
        if (shards.Count == 0) throw ShrinkException.InFile(indexPath, "the weight_map is empty");
        return shards;
    }

    /// <summary>
    /// A file directly in the repo's top folder whose name is safe to use on disk: it comes from a server,
    /// so "../x", "/etc/x" or "a\b" must never turn into a path outside the snapshot.
    /// </summary>
    public static bool IsPlainFileName(string name) =>
        name.Length is > 0 and <= 255
        && name[0] != '.'
        && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-');
}
