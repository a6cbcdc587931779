namespace LlmShrink.Formats.Gguf;

/// <summary>
/// A GGUF file (llama.cpp's model format, spec: ggml/docs/gguf.md) opened through a read-only memory mapping.
/// Layout: magic "GGUF", uint32 version, uint64 tensor count, uint64 metadata count, the metadata key/value pairs,
/// the tensor infos (name, n_dims, ne[n_dims] innermost first, ggml type id, offset), padding to
/// <see cref="Alignment"/>, then the tensor data, each tensor at its aligned offset from the start of that section.
/// Tensors keep their native GGUF names here; <c>GgufModelLoader</c> maps them to canonical ones.
/// Everything in the header is validated so that a corrupt file fails with a <see cref="ShrinkException"/>.
/// </summary>
public sealed class GgufFile : IDisposable
{
    /// <summary>"GGUF" read as a little-endian uint32.</summary>
    public const uint Magic = 0x46554747;
    public const uint DefaultAlignment = 32;
    public const string AlignmentKey = "general.alignment";
    /// <summary>ggml tensors have at most 4 dimensions (GGML_MAX_DIMS).</summary>
    public const int MaxDimensions = 4;

    /// <summary>Least bytes one metadata pair can take: 8-byte key length, 4-byte type, 1-byte value.</summary>
    private const int MinimumMetadataBytes = 8 + 4 + 1;
    /// <summary>Least bytes one tensor info can take: 8-byte name length, 4-byte n_dims, 4-byte type, 8-byte offset.</summary>
    private const int MinimumTensorInfoBytes = 8 + 4 + 4 + 8;

    private readonly Dictionary<string, StoredTensor> _tensorsByName = new(StringComparer.Ordinal);

    public MappedFile File { get; }
    public string Path => File.Path;
    public uint Version { get; }
    public uint Alignment { get; }
    /// <summary>Absolute file offset where the tensor data section starts.</summary>
    public long DataOffset { get; }
    public GgufMetadata Metadata { get; }
    /// <summary>The tensors in file order, under their GGUF names, shapes outermost-first.</summary>
    public IReadOnlyList<StoredTensor> Tensors { get; }

    public static GgufFile Open(string path)
    {
        var file = new MappedFile(path);
        try { return new GgufFile(file); }
        catch { file.Dispose(); throw; }
    }

    public StoredTensor? FindTensor(string name) => _tensorsByName.GetValueOrDefault(name);

    private readonly record struct TensorInfo(string Name, long[] Shape, TensorType Type, ulong Offset);

    private GgufFile(MappedFile file)
    {
        File = file;
        var reader = new GgufReader(file);

        uint magic = reader.ReadUInt32();
        if (magic != Magic) throw ShrinkException.InFile(Path, $"not a GGUF file (magic 0x{magic:X8}, expected \"GGUF\")");
        Version = reader.ReadUInt32();
        if (Version == 1) throw ShrinkException.InFile(Path, "GGUF version 1 is not supported (it predates 64-bit counts); re-convert the model with a current llama.cpp");
        if (Version is not (2 or 3)) throw ShrinkException.InFile(Path, $"unsupported GGUF version {Version} (supported: 2, 3)");

        ulong tensorCount = reader.ReadUInt64();
        ulong metadataCount = reader.ReadUInt64();
        int metadataPairs = reader.CheckCount(metadataCount, MinimumMetadataBytes, "metadata");
        int tensorInfos = reader.CheckCount(tensorCount, MinimumTensorInfoBytes, "tensor");

        Metadata = ReadMetadata(reader, metadataPairs);
        Alignment = ReadAlignment();
        var infos = ReadTensorInfos(reader, tensorInfos);

        DataOffset = AlignUp(reader.Position, Alignment);
        Tensors = PlaceTensors(infos);
    }

    private GgufMetadata ReadMetadata(GgufReader reader, int count)
    {
        var metadata = new GgufMetadata(Path);
        for (int i = 0; i < count; i++)
        {
            reader.Context = $"metadata pair #{i}";
            string key = reader.ReadString();
            reader.Context = $"metadata key '{GgufReader.Printable(key)}'";
            var type = reader.ReadValueType();
            metadata.Add(key, reader.ReadValue(type));
        }
        return metadata;
    }

    private uint ReadAlignment()
    {
        if (!Metadata.TryGetUInt32(AlignmentKey, out uint alignment)) return DefaultAlignment;
        if (alignment == 0 || (alignment & (alignment - 1)) != 0)
            throw ShrinkException.InFile(Path, $"{AlignmentKey} = {alignment} is not a power of two");
        return alignment;
    }

    private List<TensorInfo> ReadTensorInfos(GgufReader reader, int count)
    {
        var infos = new List<TensorInfo>(count);
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < count; i++)
        {
            reader.Context = $"tensor info #{i}";
            string name = reader.ReadString();
            reader.Context = $"tensor '{GgufReader.Printable(name)}'";
            if (!names.Add(name)) throw reader.Error("the tensor name appears twice");

            uint dims = reader.ReadUInt32();
            if (dims > MaxDimensions) throw reader.Error($"has {dims} dimensions; ggml allows at most {MaxDimensions}");
            // ne[] is innermost first (ne[0] = elements per row); StoredTensor wants outermost first.
            var shape = new long[dims];
            for (int d = 0; d < dims; d++)
            {
                ulong extent = reader.ReadUInt64();
                if (extent > long.MaxValue) throw reader.Error($"dimension {d} = {extent} is impossibly large");
                shape[dims - 1 - d] = (long)extent;
            }

            uint typeId = reader.ReadUInt32();
            if (!GgmlTypeIds.TryToTensorType(typeId, out var type))
                throw reader.Error(GgmlTypeIds.Name(typeId) is { } typeName
                    ? $"has ggml type {typeName} (id {typeId}), which LlmShrink cannot read"
                    : $"has unknown ggml type id {typeId}");
            ulong offset = reader.ReadUInt64();
            infos.Add(new TensorInfo(name, shape, type, offset));
        }
        return infos;
    }

    /// <summary>Checks each tensor's data lies aligned inside the file and apart from every other, then maps it.</summary>
    private StoredTensor[] PlaceTensors(List<TensorInfo> infos)
    {
        var tensors = new StoredTensor[infos.Count];
        for (int i = 0; i < infos.Count; i++)
        {
            var (name, shape, type, offset) = infos[i];
            ShrinkException Problem(string problem) => ShrinkException.InFile(Path, $"tensor '{GgufReader.Printable(name)}': {problem}");

            if (offset % Alignment != 0) throw Problem($"data offset {offset} is not a multiple of the alignment {Alignment}");
            long byteLength = ByteLength(shape, type, Problem);
            long dataBytes = Math.Max(0, File.Length - DataOffset);
            if (offset > (ulong)dataBytes || byteLength > dataBytes - (long)offset)
                throw Problem($"data (offset {offset}, {byteLength} bytes) lies past the end of the file ({File.Length} bytes, data starting at {DataOffset})");

            tensors[i] = new StoredTensor(name, shape, type, File, DataOffset + (long)offset);
            _tensorsByName.Add(name, tensors[i]);
        }
        CheckNoOverlap(tensors);
        return tensors;
    }

    /// <summary>Bytes of a tensor of this shape and type, rejecting shapes whose size overflows or is not whole blocks.</summary>
    private long ByteLength(long[] shape, TensorType type, Func<string, ShrinkException> problem)
    {
        long elements = 1;
        foreach (long extent in shape)
        {
            if (extent != 0 && elements > long.MaxValue / extent) throw problem("shape is impossibly large");
            elements *= extent;
        }
        long columns = shape.Length == 0 ? 1 : shape[^1];
        // Rows are decoded into spans, which hold at most int.MaxValue elements.
        if (columns > int.MaxValue) throw problem($"has {columns} elements per row; at most {int.MaxValue} are supported");
        int blockElements = TensorTypes.BlockElements(type);
        if (columns % blockElements != 0)
            throw problem($"has {columns} elements per row, not a multiple of the {type} block size {blockElements}");
        long blocks = elements / blockElements;
        if (blocks > File.Length / TensorTypes.BlockBytes(type))
            throw problem($"{elements} {type} elements cannot fit in a file of {File.Length} bytes");
        return blocks * TensorTypes.BlockBytes(type);
    }

    private void CheckNoOverlap(StoredTensor[] tensors)
    {
        var byOffset = tensors.Where(t => t.ByteLength > 0).OrderBy(t => t.Offset).ToArray();
        for (int i = 1; i < byOffset.Length; i++)
        {
            var previous = byOffset[i - 1];
            if (previous.Offset + previous.ByteLength > byOffset[i].Offset)
                throw ShrinkException.InFile(Path, $"tensors '{GgufReader.Printable(previous.Name)}' and '{GgufReader.Printable(byOffset[i].Name)}' overlap (bytes {byOffset[i].Offset}..{previous.Offset + previous.ByteLength})");
        }
    }

    private static long AlignUp(long position, uint alignment) => (position + alignment - 1) / alignment * alignment;

    public void Dispose() => File.Dispose();
}
