using System.Text;
using LlmShrink.Formats;
using LlmShrink.Formats.Gguf;

namespace LlmShrink.Tests;

/// <summary>
/// Test-only GGUF writer: lays out small files byte by byte (header, metadata, tensor infos, aligned data) with
/// knobs for the corruptions the reader must reject (wrong counts, offsets, type ids, dimension counts).
/// </summary>
internal sealed class GgufTestWriter
{
    /// <summary>An array value: element type and elements (nested arrays are <see cref="Arr"/> elements of type Array).</summary>
    public sealed record Arr(GgufValueType ElementType, params object[] Items);

    public sealed class Tensor
    {
        public required string Name { get; init; }
        /// <summary>ggml order: innermost dimension first.</summary>
        public required ulong[] Ne { get; init; }
        public required uint TypeId { get; init; }
        public required byte[] Data { get; init; }
        /// <summary>Offset written in the tensor info instead of the natural one (the data is still laid out naturally).</summary>
        public ulong? OffsetOverride { get; set; }
    }

    private readonly List<(string Key, GgufValueType Type, object Value)> _metadata = new();
    public List<Tensor> Tensors { get; } = new();

    public uint Magic { get; set; } = GgufFile.Magic;
    public uint Version { get; set; } = 3;
    /// <summary>Alignment used to lay out the data (write <c>general.alignment</c> yourself to declare a different one).</summary>
    public uint Alignment { get; set; } = 32;
    public ulong? TensorCountOverride { get; set; }
    public ulong? MetadataCountOverride { get; set; }

    public GgufTestWriter Add(string key, GgufValueType type, object value)
    {
        _metadata.Add((key, type, value));
        return this;
    }

    public GgufTestWriter AddString(string key, string value) => Add(key, GgufValueType.String, value);
    public GgufTestWriter AddUInt32(string key, uint value) => Add(key, GgufValueType.UInt32, value);
    public GgufTestWriter AddFloat(string key, float value) => Add(key, GgufValueType.Float32, value);
    public GgufTestWriter AddBool(string key, bool value) => Add(key, GgufValueType.Bool, value);
    public GgufTestWriter AddStrings(string key, params string[] values) => Add(key, GgufValueType.Array, new Arr(GgufValueType.String, values));
    public GgufTestWriter AddFloats(string key, params float[] values) => Add(key, GgufValueType.Array, new Arr(GgufValueType.Float32, values.Cast<object>().ToArray()));
    public GgufTestWriter AddInt32s(string key, params int[] values) => Add(key, GgufValueType.Array, new Arr(GgufValueType.Int32, values.Cast<object>().ToArray()));

    /// <summary>A tensor with shape outermost-first (as <see cref="StoredTensor"/> reports it).</summary>
    public Tensor AddTensor(string name, long[] shape, TensorType type, byte[] data)
    {
        var tensor = new Tensor { Name = name, Ne = shape.Reverse().Select(d => (ulong)d).ToArray(), TypeId = GgmlTypeIds.FromTensorType(type), Data = data };
        Tensors.Add(tensor);
        return tensor;
    }

    public Tensor AddF32Tensor(string name, long[] shape, Func<int, float> value)
    {
        long count = shape.Aggregate(1L, (a, b) => a * b);
        var data = new byte[4 * count];
        for (int i = 0; i < count; i++) BitConverter.TryWriteBytes(data.AsSpan(4 * i), value(i));
        return AddTensor(name, shape, TensorType.F32, data);
    }

    public byte[] ToBytes()
    {
        var stream = new MemoryStream();
        var w = new BinaryWriter(stream);
        w.Write(Magic);
        w.Write(Version);
        w.Write(TensorCountOverride ?? (ulong)Tensors.Count);
        w.Write(MetadataCountOverride ?? (ulong)_metadata.Count);
        foreach (var (key, type, value) in _metadata)
        {
            WriteString(w, key);
            w.Write((uint)type);
            WriteValue(w, type, value);
        }

        var offsets = new List<ulong>();
        ulong next = 0;
        foreach (var t in Tensors)
        {
            offsets.Add(next);
            next = AlignUp(next + (ulong)t.Data.Length, Alignment);
        }
        for (int i = 0; i < Tensors.Count; i++)
        {
            var t = Tensors[i];
            WriteString(w, t.Name);
            w.Write((uint)t.Ne.Length);
            foreach (ulong d in t.Ne) w.Write(d);
            w.Write(t.TypeId);
            w.Write(t.OffsetOverride ?? offsets[i]);
        }

        w.Flush();
        long dataStart = (long)AlignUp((ulong)stream.Length, Alignment);
        for (int i = 0; i < Tensors.Count; i++)
        {
            stream.SetLength(dataStart + (long)offsets[i]);
            stream.Position = stream.Length;
            stream.Write(Tensors[i].Data);
        }
        if (Tensors.Count > 0) stream.SetLength((long)AlignUp((ulong)stream.Length, Alignment));
        return stream.ToArray();
    }

    public string Save(string path)
    {
        File.WriteAllBytes(path, ToBytes());
        return path;
    }

    private static ulong AlignUp(ulong n, uint alignment) => (n + alignment - 1) / alignment * alignment;

    private static void WriteString(BinaryWriter w, string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    private static void WriteValue(BinaryWriter w, GgufValueType type, object value)
    {
        switch (type)
        {
            case GgufValueType.UInt8: w.Write(Convert.ToByte(value)); break;
            case GgufValueType.Int8: w.Write(Convert.ToSByte(value)); break;
            case GgufValueType.UInt16: w.Write(Convert.ToUInt16(value)); break;
            case GgufValueType.Int16: w.Write(Convert.ToInt16(value)); break;
            case GgufValueType.UInt32: w.Write(Convert.ToUInt32(value)); break;
            case GgufValueType.Int32: w.Write(Convert.ToInt32(value)); break;
            case GgufValueType.Float32: w.Write(Convert.ToSingle(value)); break;
            case GgufValueType.Bool: w.Write((byte)((bool)value ? 1 : 0)); break;
            case GgufValueType.String: WriteString(w, (string)value); break;
            case GgufValueType.UInt64: w.Write(Convert.ToUInt64(value)); break;
            case GgufValueType.Int64: w.Write(Convert.ToInt64(value)); break;
            case GgufValueType.Float64: w.Write(Convert.ToDouble(value)); break;
            case GgufValueType.Array:
                var array = (Arr)value;
                w.Write((uint)array.ElementType);
                w.Write((ulong)array.Items.Length);
                foreach (var item in array.Items) WriteValue(w, array.ElementType, item);
                break;
            default: throw new ArgumentOutOfRangeException(nameof(type));
        }
    }
}
