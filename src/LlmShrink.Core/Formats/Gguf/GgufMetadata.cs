using System.Collections;

namespace LlmShrink.Formats.Gguf;

/// <summary>
/// The key/value metadata of a GGUF file, in file order, with typed accessors. Integer accessors accept any
/// integer width whose value fits (writers disagree on uint32 vs int32 vs uint64); float accessors accept
/// float32 and float64. <c>TryGet…</c> returns false only when the key is absent: a key that is present with
/// the wrong type is a corrupt file and throws, like every <c>Get…</c> failure, a <see cref="ShrinkException"/>
/// naming the file and the key.
/// </summary>
public sealed class GgufMetadata : IReadOnlyCollection<KeyValuePair<string, GgufValue>>
{
    private readonly List<KeyValuePair<string, GgufValue>> _entries = new();
    private readonly Dictionary<string, GgufValue> _byKey = new(StringComparer.Ordinal);

    public string Path { get; }

    public GgufMetadata(string path) => Path = path;

    public int Count => _entries.Count;

    internal void Add(string key, GgufValue value)
    {
        if (!_byKey.TryAdd(key, value)) throw ShrinkException.InFile(Path, $"metadata key '{GgufReader.Printable(key)}' appears twice");
        _entries.Add(new(key, value));
    }

    public bool Contains(string key) => _byKey.ContainsKey(key);

    public GgufValue? Find(string key) => _byKey.GetValueOrDefault(key);

    public GgufValue Get(string key) =>
        _byKey.TryGetValue(key, out var value) ? value : throw ShrinkException.InFile(Path, $"missing metadata key '{key}'");

    public string GetString(string key) => AsString(key, Get(key));
    public bool TryGetString(string key, out string value) => TryConvert(key, AsString, out value);

    public uint GetUInt32(string key) => AsUInt32(key, Get(key));
    public bool TryGetUInt32(string key, out uint value) => TryConvert(key, AsUInt32, out value);

    public int GetInt32(string key) => AsInt32(key, Get(key));
    public bool TryGetInt32(string key, out int value) => TryConvert(key, AsInt32, out value);

    public float GetFloat(string key) => AsFloat(key, Get(key));
    public bool TryGetFloat(string key, out float value) => TryConvert(key, AsFloat, out value);

    public bool GetBool(string key) => AsBool(key, Get(key));
    public bool TryGetBool(string key, out bool value) => TryConvert(key, AsBool, out value);

    public string[] GetStringArray(string key) => AsStringArray(key, Get(key));
    public bool TryGetStringArray(string key, out string[] value) => TryConvert(key, AsStringArray, out value);

    public float[] GetFloatArray(string key) => AsFloatArray(key, Get(key));
    public bool TryGetFloatArray(string key, out float[] value) => TryConvert(key, AsFloatArray, out value);

    public int[] GetInt32Array(string key) => AsInt32Array(key, Get(key));
    public bool TryGetInt32Array(string key, out int[] value) => TryConvert(key, AsInt32Array, out value);

    public IEnumerator<KeyValuePair<string, GgufValue>> GetEnumerator() => _entries.GetEnumerator();
    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    private bool TryConvert<T>(string key, Func<string, GgufValue, T> convert, out T value)
    {
        if (_byKey.TryGetValue(key, out var raw)) { value = convert(key, raw); return true; }
        value = default!;
        return false;
    }

    private ShrinkException WrongType(string key, GgufValue value, string expected)
    {
        string actual = value.IsArray ? $"array of {GgufValue.TypeName(value.ElementType)}" : GgufValue.TypeName(value.Type);
        return ShrinkException.InFile(Path, $"metadata key '{key}' is {actual}, expected {expected}");
    }

    private string AsString(string key, GgufValue value) => value.Raw as string ?? throw WrongType(key, value, "string");

    private bool AsBool(string key, GgufValue value) => value.Raw is bool b ? b : throw WrongType(key, value, "bool");

    private float AsFloat(string key, GgufValue value) => value.TryGetFloat(out float f) ? f : throw WrongType(key, value, "a float");

    private uint AsUInt32(string key, GgufValue value)
    {
        if (!value.TryGetInteger(out long n)) throw WrongType(key, value, "an integer");
        if (n < 0 || n > uint.MaxValue) throw ShrinkException.InFile(Path, $"metadata key '{key}' = {n} is out of range");
        return (uint)n;
    }

    private int AsInt32(string key, GgufValue value)
    {
        if (!value.TryGetInteger(out long n)) throw WrongType(key, value, "an integer");
        if (n < int.MinValue || n > int.MaxValue) throw ShrinkException.InFile(Path, $"metadata key '{key}' = {n} is out of range");
        return (int)n;
    }

    private string[] AsStringArray(string key, GgufValue value) => value.Raw as string[] ?? throw WrongType(key, value, "array of string");

    private float[] AsFloatArray(string key, GgufValue value) => value.Raw switch
    {
        float[] floats => floats,
        double[] doubles => Array.ConvertAll(doubles, d => (float)d),
        _ => throw WrongType(key, value, "array of float32"),
    };

    private int[] AsInt32Array(string key, GgufValue value)
    {
        if (value.Raw is int[] ints) return ints;
        if (!value.IsArray || !GgufValueTypes.IsInteger(value.ElementType)) throw WrongType(key, value, "array of int32");
        var elements = (Array)value.Raw;
        var result = new int[elements.Length];
        for (int i = 0; i < result.Length; i++)
        {
            if (!GgufValue.TryInteger(elements.GetValue(i)!, out long n) || n < int.MinValue || n > int.MaxValue) throw ShrinkException.InFile(Path, $"metadata key '{key}' element {i} is out of range");
            result[i] = (int)n;
        }
        return result;
    }
}
