using System.Buffers.Binary;
using System.Text;

namespace LlmShrink.Formats.Gguf;

/// <summary>
/// Writes a GGUF v3 file (ggml/docs/gguf.md): magic, version, tensor and metadata counts, the metadata pairs, the tensor
/// infos (name, n_dims, ne[] innermost first, ggml type id, offset within the data section), zero padding to the
/// alignment, then each tensor's bytes at an aligned offset. Tensor data is streamed: each tensor's producer runs only
/// when its turn comes, so a model never has to be in memory at once. The file is written under a temporary name beside
/// the target and renamed into place when complete, so a failure never leaves a half-written model behind.
/// </summary>
public sealed class GgufWriter
{
    /// <summary>One tensor: shape outermost-first (as <see cref="StoredTensor"/>), and a producer that must write exactly its bytes.</summary>
    public sealed record TensorEntry(string Name, long[] Shape, TensorType Type, Action<Stream> WriteData)
    {
        public long ByteCount => TensorTypes.ByteCount(Type, Shape.Aggregate(1L, (a, b) => checked(a * b)));
    }

    private readonly List<KeyValuePair<string, GgufValue>> _metadata = new();
    private readonly HashSet<string> _keys = new(StringComparer.Ordinal);
    private readonly List<TensorEntry> _tensors = new();
    private readonly HashSet<string> _tensorNames = new(StringComparer.Ordinal);

    /// <summary>Data alignment in bytes (a power of two); recorded as <c>general.alignment</c>.</summary>
    public uint Alignment { get; }

    public GgufWriter(uint alignment = GgufFile.DefaultAlignment)
    {
        if (alignment == 0 || (alignment & (alignment - 1)) != 0) throw new ArgumentException($"alignment {alignment} is not a power of two", nameof(alignment));
        Alignment = alignment;
        Add(GgufFile.AlignmentKey, new GgufValue(GgufValueType.UInt32, alignment));
    }

    public IReadOnlyList<KeyValuePair<string, GgufValue>> Metadata => _metadata;
    public IReadOnlyList<TensorEntry> Tensors => _tensors;

    /// <summary>Adds a metadata pair; keys are written in the order added. Scalars are boxed in their own CLR type, arrays are typed arrays.</summary>
    public GgufWriter Add(string key, GgufValue value)
    {
        if (!_keys.Add(key)) throw new ArgumentException($"metadata key '{key}' added twice", nameof(key));
        _metadata.Add(new(key, value));
        return this;
    }

    public GgufWriter AddString(string key, string value) => Add(key, new GgufValue(GgufValueType.String, value));
    public GgufWriter AddUInt32(string key, uint value) => Add(key, new GgufValue(GgufValueType.UInt32, value));
    public GgufWriter AddInt32(string key, int value) => Add(key, new GgufValue(GgufValueType.Int32, value));
    public GgufWriter AddFloat32(string key, float value) => Add(key, new GgufValue(GgufValueType.Float32, value));
    public GgufWriter AddBool(string key, bool value) => Add(key, new GgufValue(GgufValueType.Bool, value));
    public GgufWriter AddStrings(string key, string[] values) => Add(key, new GgufValue(GgufValueType.String, (Array)values));
    public GgufWriter AddFloat32s(string key, float[] values) => Add(key, new GgufValue(GgufValueType.Float32, (Array)values));
    public GgufWriter AddInt32s(string key, int[] values) => Add(key, new GgufValue(GgufValueType.Int32, (Array)values));

    public GgufWriter AddTensor(string name, long[] shape, TensorType type, Action<Stream> writeData)
    {
        if (!_tensorNames.Add(name)) throw new ArgumentException($"tensor '{name}' added twice", nameof(name));
        if (shape.Length > GgufFile.MaxDimensions) throw new ArgumentException($"tensor '{name}' has {shape.Length} dimensions; ggml allows {GgufFile.MaxDimensions}");
        long columns = shape.Length == 0 ? 1 : shape[^1];
        if (columns % TensorTypes.BlockElements(type) != 0)
            throw new ArgumentException($"tensor '{name}' has rows of {columns}, not a multiple of the {type} block size {TensorTypes.BlockElements(type)}");
        _tensors.Add(new TensorEntry(name, shape, type, writeData));
        return this;
    }

    /// <summary>
    /// Writes the file to <paramref name="path"/>. <paramref name="inputs"/> are the files the tensor producers read; the
    /// path must not be one of them (after resolving symbolic links). A cancelled <paramref name="cancellation"/> stops the
    /// write at the producers' next write and deletes the temporary file.
    /// </summary>
    public void Write(string path, IEnumerable<string> inputs, CancellationToken cancellation = default)
    {
        OutputPaths.RefuseOverwrite(path, inputs);
        string temporary = $"{path}.tmp-{Guid.NewGuid():N}";
        try
        {
            using (var file = CreateFile(temporary, path))
            {
                var buffered = new BufferedStream(file, 1 << 20);
                var stream = new CancellableWriteStream(buffered, cancellation);
                long dataStart = WriteHeader(stream);
                long offset = 0;
                foreach (var tensor in _tensors)
                {
                    long start = stream.Position;
                    if (start - dataStart != offset) throw new InvalidOperationException("GGUF data offset drifted");
                    tensor.WriteData(stream);
                    long written = stream.Position - start;
                    if (written != tensor.ByteCount)
                        throw new InvalidOperationException($"{path}: tensor '{tensor.Name}' wrote {written} bytes but its shape and type need {tensor.ByteCount}");
                    offset = AlignUp(offset + written);
                    WriteZeros(stream, dataStart + offset - stream.Position);
                }
                buffered.Flush();
                file.Flush(flushToDisk: true);
            }
            File.Move(temporary, path, overwrite: true);
        }
        catch
        {
            try { File.Delete(temporary); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    private static FileStream CreateFile(string temporary, string path)
    {
        try { return new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None, 4096); }
        catch (DirectoryNotFoundException) { throw ShrinkException.InFile(path, "cannot write: the folder does not exist"); }
        catch (UnauthorizedAccessException) { throw ShrinkException.InFile(path, "cannot write: permission denied"); }
    }

    private long AlignUp(long position) => (position + Alignment - 1) / Alignment * Alignment;

    private static void WriteZeros(Stream stream, long count)
    {
        for (long i = 0; i < count; i++) stream.WriteByte(0);
    }

    /// <summary>Everything before the tensor data, padded to the alignment; returns where the data section starts.</summary>
    private long WriteHeader(Stream stream)
    {
        var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true); // little-endian, as GGUF requires
        w.Write(GgufFile.Magic);
        w.Write(3u);
        w.Write((ulong)_tensors.Count);
        w.Write((ulong)_metadata.Count);
        foreach (var (key, value) in _metadata)
        {
            WriteString(w, key);
            w.Write((uint)value.Type);
            WriteValue(w, value);
        }

        long offset = 0;
        foreach (var tensor in _tensors)
        {
            WriteString(w, tensor.Name);
            w.Write((uint)tensor.Shape.Length);
            for (int d = tensor.Shape.Length - 1; d >= 0; d--) w.Write((ulong)tensor.Shape[d]); // ne[0] is the innermost
            w.Write(GgmlTypeIds.FromTensorType(tensor.Type));
            w.Write((ulong)offset);
            offset = AlignUp(offset + tensor.ByteCount);
        }
        w.Flush();
        long dataStart = AlignUp(stream.Position);
        WriteZeros(stream, dataStart - stream.Position);
        return dataStart;
    }

    private static void WriteString(BinaryWriter w, string text)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    /// <summary>A value's payload (its type tag is written by the caller); an array is element type, count, elements.</summary>
    private static void WriteValue(BinaryWriter w, GgufValue value)
    {
        if (!value.IsArray)
        {
            WriteScalar(w, value.Type, value.Raw);
            return;
        }
        var elements = (Array)value.Raw;
        w.Write((uint)value.ElementType);
        w.Write((ulong)elements.Length);
        foreach (object element in elements)
        {
            if (value.ElementType == GgufValueType.Array)
            {
                var nested = element as GgufValue ?? throw new ArgumentException("an array of arrays must hold GgufValue arrays");
                if (!nested.IsArray) throw new ArgumentException("an array of arrays must hold GgufValue arrays");
                WriteValue(w, nested);
            }
            else WriteScalar(w, value.ElementType, element);
        }
    }

    private static void WriteScalar(BinaryWriter w, GgufValueType type, object raw)
    {
        switch (type)
        {
            case GgufValueType.UInt8: w.Write(Convert.ToByte(raw)); break;
            case GgufValueType.Int8: w.Write(Convert.ToSByte(raw)); break;
            case GgufValueType.UInt16: w.Write(Convert.ToUInt16(raw)); break;
            case GgufValueType.Int16: w.Write(Convert.ToInt16(raw)); break;
            case GgufValueType.UInt32: w.Write(Convert.ToUInt32(raw)); break;
            case GgufValueType.Int32: w.Write(Convert.ToInt32(raw)); break;
            case GgufValueType.Float32: w.Write(Convert.ToSingle(raw)); break;
            case GgufValueType.Bool: w.Write((byte)((bool)raw ? 1 : 0)); break;
            case GgufValueType.String: WriteString(w, (string)raw); break;
            case GgufValueType.UInt64: w.Write(Convert.ToUInt64(raw)); break;
            case GgufValueType.Int64: w.Write(Convert.ToInt64(raw)); break;
            case GgufValueType.Float64: w.Write(Convert.ToDouble(raw)); break;
            default: throw new ArgumentException($"GGUF value type {type} is not a scalar");
        }
    }
}
