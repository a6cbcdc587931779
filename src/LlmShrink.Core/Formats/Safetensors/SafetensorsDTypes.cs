namespace LlmShrink.Formats.Safetensors;

/// <summary>
/// The dtype strings of the safetensors header (see the format description in huggingface/safetensors) and the
/// <see cref="TensorType"/> each maps to: signed integers, IEEE/bfloat floats and U8 (packed bytes). BOOL and the F8_*
/// formats have no <see cref="TensorType"/>, and reading them as something else would be silently wrong.
/// </summary>
public static class SafetensorsDTypes
{
    private static readonly (string Name, TensorType Type)[] Known =
    [
        ("F32", TensorType.F32), ("F16", TensorType.F16), ("BF16", TensorType.BF16), ("F64", TensorType.F64),
        ("I8", TensorType.I8), ("U8", TensorType.U8), ("I16", TensorType.I16), ("I32", TensorType.I32), ("I64", TensorType.I64),
    ];

    public static string SupportedList => string.Join(", ", Known.Select(k => k.Name));

    public static bool TryParse(string name, out TensorType type)
    {
        foreach (var (n, t) in Known)
            if (n == name) { type = t; return true; }
        type = default;
        return false;
    }

    /// <summary>The header name of <paramref name="type"/>; block-quantized ggml types have none.</summary>
    public static string Name(TensorType type)
    {
        foreach (var (n, t) in Known)
            if (t == type) return n;
        throw new ArgumentException($"{type} cannot be stored in safetensors (supported: {SupportedList})", nameof(type));
    }
}
