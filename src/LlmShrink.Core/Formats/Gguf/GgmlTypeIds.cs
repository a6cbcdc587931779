namespace LlmShrink.Formats.Gguf;

/// <summary>
/// ggml's numbering of tensor types (enum ggml_type in ggml.h), as stored in GGUF tensor infos. Only the types
/// this project decodes are listed; the ids in between belong to types it does not support (Q8_1, IQ*, TQ*, …).
/// </summary>
public static class GgmlTypeIds
{
    private static readonly (uint Id, TensorType Type)[] Known =
    [
        (0, TensorType.F32), (1, TensorType.F16), (2, TensorType.Q4_0), (3, TensorType.Q4_1),
        (6, TensorType.Q5_0), (7, TensorType.Q5_1), (8, TensorType.Q8_0),
        (10, TensorType.Q2_K), (11, TensorType.Q3_K), (12, TensorType.Q4_K), (13, TensorType.Q5_K), (14, TensorType.Q6_K),
        (24, TensorType.I8), (25, TensorType.I16), (26, TensorType.I32), (27, TensorType.I64), (28, TensorType.F64),
        (30, TensorType.BF16),
    ];

    public static bool TryToTensorType(uint id, out TensorType type)
    {
        foreach (var (knownId, knownType) in Known)
            if (knownId == id) { type = knownType; return true; }
        type = default;
        return false;
    }

    public static uint FromTensorType(TensorType type)
    {
        foreach (var (knownId, knownType) in Known)
            if (knownType == type) return knownId;
        throw new ArgumentOutOfRangeException(nameof(type));
    }
}
