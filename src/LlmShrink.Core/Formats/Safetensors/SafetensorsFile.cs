using System.Buffers.Binary;
using System.Text.Json;

namespace LlmShrink.Formats.Safetensors;

/// <summary>
/// A memory-mapped safetensors file. Layout (huggingface/safetensors): an 8-byte little-endian header length N,
/// N bytes of UTF-8 JSON mapping each tensor name to {dtype, shape, data_offsets: [begin, end]} (plus an optional
/// "__metadata__" string→string map), then the data; offsets count from the first byte after the header.
/// Every number is checked against the file size before anything is trusted, and tensors point into the mapping.
/// </summary>
public sealed class SafetensorsFile : IDisposable
{
    /// <summary>Headers are a few KB to a few MB; a larger claim is a corrupt length, not a real header.</summary>
    public const long MaxHeaderBytes = 100L * 1024 * 1024;

    public MappedFile File { get; }
    public string Path => File.Path;
    public IReadOnlyDictionary<string, string> Metadata { get; }
    /// <summary>Tensors in header order, under the names the file uses.</summary>
    public IReadOnlyList<StoredTensor> Tensors { get; }
    private readonly Dictionary<string, StoredTensor> _byName;

    private SafetensorsFile(MappedFile file, Dictionary<string, string> metadata, List<StoredTensor> tensors)
    {
        File = file;
        Metadata = metadata;
        Tensors = tensors;
        _byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
    }

    public StoredTensor? Find(string name) => _byName.GetValueOrDefault(name);

    public static SafetensorsFile Open(string path)
    {
        var file = new MappedFile(path);
        try { return Parse(file); }
        catch { file.Dispose(); throw; }
    }

    /// <summary>All tensors of one file as a <see cref="TensorSet"/> that owns the mapping.</summary>
    public static TensorSet LoadSet(string path)
    {
        var st = Open(path);
        var set = new TensorSet();
        set.AddFile(st.File);
        try
        {
            foreach (var t in st.Tensors) set.Add(t);
            return set;
        }
        catch { set.Dispose(); throw; }
    }

    public void Dispose() => File.Dispose();

    private static SafetensorsFile Parse(MappedFile file)
    {
        string path = file.Path;
        if (file.Length < 8) throw ShrinkException.InFile(path, $"truncated safetensors file: {file.Length} bytes, less than the 8-byte header length");
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(file.Span(0, 8));
        if (headerLength > (ulong)(file.Length - 8))
            throw ShrinkException.InFile(path, $"safetensors header length {headerLength} runs past the end of the file ({file.Length} bytes): truncated or not a safetensors file");
        if (headerLength > MaxHeaderBytes)
            throw ShrinkException.InFile(path, $"safetensors header length {headerLength} exceeds the {MaxHeaderBytes}-byte limit: corrupt file");
        long dataStart = 8 + (long)headerLength;
        long dataLength = file.Length - dataStart;

        var header = file.Span(8, (int)headerLength);
        // System.Text.Json checks string contents only when they are read; check the whole header up front instead.
        if (!System.Text.Unicode.Utf8.IsValid(header)) throw ShrinkException.InFile(path, "safetensors header is not valid UTF-8");
        JsonDocument document;
        try
        {
            // The header is bounded by the file size and the cap above, so this copy is small.
            document = JsonDocument.Parse(header.ToArray());
        }
        catch (JsonException e) { throw ShrinkException.InFile(path, $"safetensors header is not valid JSON ({OneLine(e.Message)})"); }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw ShrinkException.InFile(path, "safetensors header is not a JSON object");

            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var entries = new List<(string Name, TensorType Type, long[] Shape, long Begin, long End)>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var property in root.EnumerateObject())
            {
                if (!seen.Add(property.Name)) throw ShrinkException.InFile(path, $"'{property.Name}' appears twice in the safetensors header");
                if (property.Name == "__metadata__") ReadMetadata(path, property.Value, metadata);
                else entries.Add(ReadEntry(path, property.Name, property.Value, dataLength));
            }

            // Two tensors sharing bytes would let a write through one corrupt the other; the format forbids it.
            var byBegin = entries.OrderBy(e => e.Begin).ThenBy(e => e.End).ToList();
            for (int i = 1; i < byBegin.Count; i++)
                if (byBegin[i].Begin < byBegin[i - 1].End)
                    throw ShrinkException.InFile(path, $"tensors '{byBegin[i - 1].Name}' and '{byBegin[i].Name}' overlap (data_offsets [{byBegin[i - 1].Begin}, {byBegin[i - 1].End}] and [{byBegin[i].Begin}, {byBegin[i].End}])");

            var tensors = entries.Select(e => new StoredTensor(e.Name, e.Shape, e.Type, file, dataStart + e.Begin)).ToList();
            return new SafetensorsFile(file, metadata, tensors);
        }
    }

    private static void ReadMetadata(string path, JsonElement value, Dictionary<string, string> metadata)
    {
        if (value.ValueKind != JsonValueKind.Object) throw ShrinkException.InFile(path, "safetensors '__metadata__' is not a JSON object");
        foreach (var item in value.EnumerateObject())
        {
            if (item.Value.ValueKind != JsonValueKind.String)
                throw ShrinkException.InFile(path, $"safetensors '__metadata__' value for '{item.Name}' is not a string");
            metadata[item.Name] = item.Value.GetString()!;
        }
    }

    private static (string, TensorType, long[], long, long) ReadEntry(string path, string name, JsonElement value, long dataLength)
    {
        ShrinkException Bad(string problem) => ShrinkException.InFile(path, $"tensor '{name}': {problem}");

        if (value.ValueKind != JsonValueKind.Object) throw Bad("header entry is not a JSON object");
        if (!value.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
            throw Bad("missing string 'dtype'");
        string dtype = dtypeElement.GetString()!;
        if (!SafetensorsDTypes.TryParse(dtype, out var type))
            throw Bad($"unsupported dtype {dtype} (supported: {SafetensorsDTypes.SupportedList})");

        long[] shape = ReadIntegers(value, "shape", Bad);
        long[] offsets = ReadIntegers(value, "data_offsets", Bad);
        if (offsets.Length != 2) throw Bad($"'data_offsets' must have 2 numbers, not {offsets.Length}");
        var (begin, end) = (offsets[0], offsets[1]);
        if (begin > end) throw Bad($"data_offsets [{begin}, {end}] end before they begin");
        if (end > dataLength) throw Bad($"data_offsets [{begin}, {end}] run past the end of the data ({dataLength} bytes): truncated file");

        long elements = 1;
        foreach (long d in shape)
        {
            if (d != 0 && elements > long.MaxValue / d) throw Bad($"shape [{string.Join(", ", shape)}] is impossibly large");
            elements *= d;
        }
        int elementBytes = TensorTypes.BlockBytes(type);
        if (elements > long.MaxValue / elementBytes) throw Bad($"shape [{string.Join(", ", shape)}] is impossibly large");
        long expected = elements * elementBytes;
        if (end - begin != expected)
            throw Bad($"data_offsets [{begin}, {end}] hold {end - begin} bytes but shape [{string.Join(", ", shape)}] of {dtype} needs {expected}");
        return (name, type, shape, begin, end);
    }

    /// <summary>A JSON array of non-negative integers (shapes and offsets).</summary>
    private static long[] ReadIntegers(JsonElement entry, string key, Func<string, ShrinkException> bad)
    {
        if (!entry.TryGetProperty(key, out var array) || array.ValueKind != JsonValueKind.Array)
            throw bad($"missing array '{key}'");
        var result = new long[array.GetArrayLength()];
        int i = 0;
        foreach (var item in array.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt64(out long v) || v < 0)
                throw bad($"'{key}' must contain non-negative integers");
            result[i++] = v;
        }
        return result;
    }

    internal static string OneLine(string message) => message.ReplaceLineEndings(" ");
}
