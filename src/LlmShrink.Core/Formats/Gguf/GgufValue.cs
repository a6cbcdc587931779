using System.Globalization;
using System.Text;

namespace LlmShrink.Formats.Gguf;

/// <summary>
/// One metadata value of a GGUF file. A scalar is held boxed in its own CLR type (byte, sbyte, ushort, short,
/// uint, int, float, bool, string, ulong, long, double); an array as a typed CLR array of those, or, for an
/// array of arrays, as <see cref="GgufValue"/>[].
/// </summary>
public sealed class GgufValue
{
    public GgufValueType Type { get; }
    /// <summary>For arrays, the type of the elements; for scalars, the same as <see cref="Type"/>.</summary>
    public GgufValueType ElementType { get; }
    public object Raw { get; }

    public GgufValue(GgufValueType type, object raw)
    {
        Type = type;
        ElementType = type;
        Raw = raw;
    }

    public GgufValue(GgufValueType elementType, Array elements)
    {
        Type = GgufValueType.Array;
        ElementType = elementType;
        Raw = elements;
    }

    public bool IsArray => Type == GgufValueType.Array;

    /// <summary>Number of elements of an array (1 for a scalar).</summary>
    public int Count => Raw is Array a ? a.Length : 1;

    /// <summary>The value as a whole number, if it is an integer of any width that fits in a long.</summary>
    public bool TryGetInteger(out long value) => TryInteger(Raw, out value);

    /// <summary>The value as a float, if it is a float32 or float64.</summary>
    public bool TryGetFloat(out float value)
    {
        switch (Raw)
        {
            case float f: value = f; return true;
            case double d: value = (float)d; return true;
            default: value = 0; return false;
        }
    }

    internal static bool TryInteger(object boxed, out long value)
    {
        switch (boxed)
        {
            case byte v: value = v; return true;
            case sbyte v: value = v; return true;
            case ushort v: value = v; return true;
            case short v: value = v; return true;
            case uint v: value = v; return true;
            case int v: value = v; return true;
            case long v: value = v; return true;
            case ulong v when v <= long.MaxValue: value = (long)v; return true;
            default: value = 0; return false;
        }
    }

    /// <summary>Short human-readable form for <c>inspect</c>: scalars in full, arrays as type, length and the first few elements.</summary>
    public string Describe(int maxElements = 8)
    {
        if (Raw is not Array array) return Format(Raw);
        var text = new StringBuilder();
        text.Append('[').Append(TypeName(ElementType)).Append(" × ").Append(array.Length);
        int shown = Math.Min(array.Length, maxElements);
        for (int i = 0; i < shown; i++) text.Append(i == 0 ? ": " : ", ").Append(Format(array.GetValue(i)!, maxElements));
        if (shown < array.Length) text.Append(", …");
        return text.Append(']').ToString();
    }

    public override string ToString() => Describe();

    public static string TypeName(GgufValueType type) => type.ToString().ToLowerInvariant();

    private static string Format(object value, int maxElements = 8) => value switch
    {
        string s => "\"" + s + "\"",
        bool b => b ? "true" : "false",
        float f => f.ToString("R", CultureInfo.InvariantCulture),
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        GgufValue nested => nested.Describe(maxElements),
        IFormattable n => n.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "",
    };
}
