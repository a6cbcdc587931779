using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;

namespace LlmShrink.Formats.Gguf;

/// <summary>
/// A forward cursor over the header of a mapped GGUF file that reads GGUF's little-endian primitives,
/// strings (uint64 length + UTF-8 bytes) and metadata values. Every read is checked against the bytes that
/// remain, and every element count against the least space its elements could take, before anything is
/// allocated — so a corrupt length fails as a one-line <see cref="ShrinkException"/>, never as a huge allocation.
/// </summary>
internal sealed class GgufReader
{
    /// <summary>Arrays of arrays are legal GGUF, but real files nest one level; the limit keeps a crafted file from exhausting the stack.</summary>
    private const int MaxArrayNesting = 16;

    private readonly MappedFile _file;

    public GgufReader(MappedFile file) => _file = file;

    public long Position { get; private set; }
    public long Remaining => _file.Length - Position;

    /// <summary>What is being read, for error messages (e.g. "metadata key 'general.name'").</summary>
    public string Context { get; set; } = "header";

    /// <summary>
    /// A name or string read from the file as it may appear inside a one-line error message: control characters
    /// escaped and long text cut, since a corrupt length can make a "name" out of kilobytes of binary data.
    /// </summary>
    public static string Printable(string text, int maxChars = 80)
    {
        var result = new StringBuilder();
        foreach (char c in text.Length > maxChars ? text[..maxChars] : text)
        {
            if (char.IsControl(c) || c is '\u2028' or '\u2029') result.Append($"\\u{(int)c:X4}");
            else result.Append(c);
        }
        return text.Length > maxChars ? result.Append('…').ToString() : result.ToString();
    }

    public ShrinkException Error(string problem) => ShrinkException.InFile(_file.Path, $"{Context}: {problem}");

    private ReadOnlySpan<byte> Take(long count)
    {
        if (count > Remaining)
            throw Error($"truncated: needs {count} bytes at offset {Position} but the file ends {Remaining} bytes later");
        var bytes = _file.Span(Position, (int)count);
        Position += count;
        return bytes;
    }

    public byte ReadUInt8() => Take(1)[0];
    public ushort ReadUInt16() => BinaryPrimitives.ReadUInt16LittleEndian(Take(2));
    public uint ReadUInt32() => BinaryPrimitives.ReadUInt32LittleEndian(Take(4));
    public ulong ReadUInt64() => BinaryPrimitives.ReadUInt64LittleEndian(Take(8));
    public float ReadFloat32() => BinaryPrimitives.ReadSingleLittleEndian(Take(4));
    public double ReadFloat64() => BinaryPrimitives.ReadDoubleLittleEndian(Take(8));

    public string ReadString()
    {
        ulong length = ReadUInt64();
        if (length > (ulong)Remaining)
            throw Error($"string length {length} at offset {Position - 8} runs past the end of the file ({Remaining} bytes remain)");
        if (length > int.MaxValue) throw Error($"string length {length} is too large");
        return Encoding.UTF8.GetString(Take((long)length));
    }

    /// <summary>Checks that <paramref name="count"/> items of at least <paramref name="minBytesEach"/> bytes could fit in the rest of the file.</summary>
    public int CheckCount(ulong count, int minBytesEach, string what)
    {
        if (count > (ulong)(Remaining / minBytesEach))
            throw Error($"{what} count {count} cannot fit in the {Remaining} bytes that remain");
        if (count > int.MaxValue) throw Error($"{what} count {count} is too large");
        return (int)count;
    }

    public GgufValueType ReadValueType()
    {
        uint tag = ReadUInt32();
        if (!GgufValueTypes.IsDefined(tag)) throw Error($"unknown metadata value type {tag}");
        return (GgufValueType)tag;
    }

    public GgufValue ReadValue(GgufValueType type) => ReadValue(type, nesting: 0);

    private GgufValue ReadValue(GgufValueType type, int nesting) => type switch
    {
        GgufValueType.UInt8 => new(type, ReadUInt8()),
        GgufValueType.Int8 => new(type, (sbyte)ReadUInt8()),
        GgufValueType.UInt16 => new(type, ReadUInt16()),
        GgufValueType.Int16 => new(type, (short)ReadUInt16()),
        GgufValueType.UInt32 => new(type, ReadUInt32()),
        GgufValueType.Int32 => new(type, (int)ReadUInt32()),
        GgufValueType.Float32 => new(type, ReadFloat32()),
        GgufValueType.Bool => new(type, ReadUInt8() != 0),
        GgufValueType.String => new(type, ReadString()),
        GgufValueType.UInt64 => new(type, ReadUInt64()),
        GgufValueType.Int64 => new(type, (long)ReadUInt64()),
        GgufValueType.Float64 => new(type, ReadFloat64()),
        GgufValueType.Array => ReadArray(nesting),
        _ => throw Error($"unknown metadata value type {(uint)type}"),
    };

    /// <summary>An array: uint32 element type, uint64 count, then the elements back to back.</summary>
    private GgufValue ReadArray(int nesting)
    {
        if (nesting >= MaxArrayNesting) throw Error($"arrays nested more than {MaxArrayNesting} deep");
        var elementType = ReadValueType();
        int count = CheckCount(ReadUInt64(), GgufValueTypes.MinimumBytes(elementType), "array element");
        Array elements = elementType switch
        {
            GgufValueType.UInt8 => Take(count).ToArray(),
            GgufValueType.Int8 => MemoryMarshal.Cast<byte, sbyte>(Take(count)).ToArray(),
            GgufValueType.Bool => ReadBools(count),
            // GGUF is little-endian, as is every machine .NET runs this on, so fixed-width arrays are a straight copy.
            GgufValueType.UInt16 => MemoryMarshal.Cast<byte, ushort>(Take(2L * count)).ToArray(),
            GgufValueType.Int16 => MemoryMarshal.Cast<byte, short>(Take(2L * count)).ToArray(),
            GgufValueType.UInt32 => MemoryMarshal.Cast<byte, uint>(Take(4L * count)).ToArray(),
            GgufValueType.Int32 => MemoryMarshal.Cast<byte, int>(Take(4L * count)).ToArray(),
            GgufValueType.Float32 => MemoryMarshal.Cast<byte, float>(Take(4L * count)).ToArray(),
            GgufValueType.UInt64 => MemoryMarshal.Cast<byte, ulong>(Take(8L * count)).ToArray(),
            GgufValueType.Int64 => MemoryMarshal.Cast<byte, long>(Take(8L * count)).ToArray(),
            GgufValueType.Float64 => MemoryMarshal.Cast<byte, double>(Take(8L * count)).ToArray(),
            GgufValueType.String => ReadStrings(count),
            GgufValueType.Array => ReadNestedArrays(count, nesting),
            _ => throw Error($"unknown metadata value type {(uint)elementType}"),
        };
        return new GgufValue(elementType, elements);
    }

    private bool[] ReadBools(int count)
    {
        var bytes = Take(count);
        var result = new bool[count];
        for (int i = 0; i < count; i++) result[i] = bytes[i] != 0;
        return result;
    }

    private string[] ReadStrings(int count)
    {
        var result = new string[count];
        for (int i = 0; i < count; i++) result[i] = ReadString();
        return result;
    }

    /// <summary>Each element of an array of arrays is itself an array value (its own element type, count and elements).</summary>
    private GgufValue[] ReadNestedArrays(int count, int nesting)
    {
        var result = new GgufValue[count];
        for (int i = 0; i < count; i++) result[i] = ReadArray(nesting + 1);
        return result;
    }
}
