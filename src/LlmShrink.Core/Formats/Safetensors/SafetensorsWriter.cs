using System.Buffers.Binary;
using System.Text.Json;

namespace LlmShrink.Formats.Safetensors;

/// <summary>Writes a safetensors file atomically (temporary file, then rename), streaming each tensor's bytes.</summary>
public static class SafetensorsWriter
{
    /// <summary>One tensor to write: <see cref="WriteData"/> must write exactly the tensor's byte count.</summary>
    public sealed record Entry(string Name, TensorType Type, long[] Shape, Action<Stream> WriteData);

    /// <summary>
    /// The header is computed from the shapes alone, so each tensor is produced only when its turn comes and
    /// never has to be held in memory with the others. Tensors are stored in <paramref name="entries"/> order. A cancelled
    /// <paramref name="cancellation"/> stops the write at the producers' next write and deletes the temporary file.
    /// </summary>
    public static void Write(string path, IReadOnlyList<Entry> entries, IReadOnlyDictionary<string, string>? metadata = null,
        CancellationToken cancellation = default)
    {
        var byteCounts = entries.Select(ByteCount).ToArray();
        byte[] header = BuildHeader(entries, byteCounts, metadata);

        string temporary = $"{path}.tmp-{Guid.NewGuid():N}";
        try
        {
            using (var file = CreateFile(temporary, path))
            {
                var stream = new CancellableWriteStream(file, cancellation);
                Span<byte> length = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
                stream.Write(length);
                stream.Write(header);
                for (int i = 0; i < entries.Count; i++)
                {
                    long start = stream.Position;
                    entries[i].WriteData(stream);
                    long written = stream.Position - start;
                    if (written != byteCounts[i])
                        throw new InvalidOperationException($"{path}: tensor '{entries[i].Name}' wrote {written} bytes but its shape and type need {byteCounts[i]}");
                }
                file.Flush(flushToDisk: true);
            }
            File.Move(temporary, path, overwrite: true);
        }
        catch
        {
            // Failure or cancellation (an OperationCanceledException from WriteData) leaves no partial file behind.
            try { File.Delete(temporary); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    private static FileStream CreateFile(string temporary, string path)
    {
        try { return new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20); }
        catch (DirectoryNotFoundException) { throw ShrinkException.InFile(path, "cannot write: the folder does not exist"); }
        catch (UnauthorizedAccessException) { throw ShrinkException.InFile(path, "cannot write: permission denied"); }
    }

    private static long ByteCount(Entry entry)
    {
        long elements = 1;
        foreach (long d in entry.Shape)
        {
            if (d < 0) throw new ArgumentException($"tensor '{entry.Name}' has negative dimension {d}");
            elements = checked(elements * d);
        }
        return checked(elements * TensorTypes.BlockBytes(entry.Type));
    }

    /// <summary>
    /// The bytes <paramref name="entries"/> add to a file: their data and their header entries, as <see cref="Write"/>
    /// writes them. The offsets are written as if the entries began the file's data; further into a file they have more
    /// digits (at most 18 more bytes per tensor), and the header's padding to 8 bytes adds up to 7 once per file.
    /// </summary>
    public static long StoredBytes(IReadOnlyList<Entry> entries)
    {
        var byteCounts = entries.Select(ByteCount).ToArray();
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            long offset = 0;
            for (int i = 0; i < entries.Count; i++)
            {
                WriteEntry(json, entries[i], offset, byteCounts[i]);
                offset = checked(offset + byteCounts[i]);
            }
            json.WriteEndObject();
        }
        if (entries.Count == 0) return 0;
        // The braces belong to the file; one comma joins these entries to the file's others.
        return byteCounts.Sum() + buffer.Length - 2 + 1;
    }

    private static void WriteEntry(Utf8JsonWriter json, Entry e, long offset, long byteCount)
    {
        json.WriteStartObject(e.Name);
        json.WriteString("dtype", SafetensorsDTypes.Name(e.Type));
        json.WriteStartArray("shape");
        foreach (long d in e.Shape) json.WriteNumberValue(d);
        json.WriteEndArray();
        json.WriteStartArray("data_offsets");
        json.WriteNumberValue(offset);
        json.WriteNumberValue(offset + byteCount);
        json.WriteEndArray();
        json.WriteEndObject();
    }

    /// <summary>JSON header padded with spaces so the data starts at a multiple of 8 bytes (the format's recommendation).</summary>
    private static byte[] BuildHeader(IReadOnlyList<Entry> entries, long[] byteCounts, IReadOnlyDictionary<string, string>? metadata)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject("__metadata__");
                foreach (var (key, value) in metadata) json.WriteString(key, value);
                json.WriteEndObject();
            }
            var names = new HashSet<string>(StringComparer.Ordinal);
            long offset = 0;
            for (int i = 0; i < entries.Count; i++)
            {
                var e = entries[i];
                if (e.Name == "__metadata__" || !names.Add(e.Name)) throw new ArgumentException($"tensor name '{e.Name}' is reserved or repeated");
                WriteEntry(json, e, offset, byteCounts[i]);
                offset = checked(offset + byteCounts[i]);
            }
            json.WriteEndObject();
        }
        while ((8 + buffer.Length) % 8 != 0) buffer.WriteByte((byte)' ');
        return buffer.ToArray();
    }
}
