namespace LlmShrink.Formats.Gguf;

/// <summary>Type tags of GGUF metadata values, as numbered by the GGUF specification (gguf.md, "gguf_metadata_value_type").</summary>
public enum GgufValueType : uint
{
    UInt8 = 0,
    Int8 = 1,
    UInt16 = 2,
    Int16 = 3,
    UInt32 = 4,
    Int32 = 5,
    Float32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    UInt64 = 10,
    Int64 = 11,
    Float64 = 12,
}

public static class GgufValueTypes
{
    public static bool IsDefined(uint tag) => tag <= (uint)GgufValueType.Float64;

    /// <summary>Bytes a value of this type occupies, or for strings and arrays the least it can occupy
    /// (a string is at least its 8-byte length; an array at least its 4-byte element type and 8-byte count).
    /// Used to reject element counts that could not possibly fit in the rest of the file.</summary>
    public static int MinimumBytes(GgufValueType type) => type switch
    {
        GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.Bool => 1,
        GgufValueType.UInt16 or GgufValueType.Int16 => 2,
        GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.Float32 => 4,
        GgufValueType.UInt64 or GgufValueType.Int64 or GgufValueType.Float64 => 8,
        GgufValueType.String => 8,
        GgufValueType.Array => 4 + 8,
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };

    public static bool IsInteger(GgufValueType type) => type is
        GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.UInt16 or GgufValueType.Int16 or
        GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.UInt64 or GgufValueType.Int64;
}
