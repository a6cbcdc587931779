namespace LlmShrink.Formats.Safetensors;

/// <summary>Writes a safetensors file atomically (temporary file, then rename), streaming each tensor's bytes.</summary>
public static class SafetensorsWriter
{
    /// <summary>One tensor to write: <see cref="WriteData"/> must write exactly the tensor's byte count.</summary>
    public sealed record Entry(string Name, TensorType Type, long[] Shape, Action<Stream> WriteData);

    public static void Write(string path, IReadOnlyList<Entry> entries, IReadOnlyDictionary<string, string>? metadata = null) =>
        throw new NotImplementedException();
}
