namespace LlmShrink.Formats.Gguf;

/// <summary>
/// ggml's numbering of tensor types (enum ggml_type in ggml.h), as stored in GGUF tensor infos. <see cref="Known"/> lists
/// the types this project decodes; <see cref="Unread"/> names the other ids ggml has used, so that a file holding one is
/// refused with the type's name rather than a bare number.
/// </summary>
public static class GgmlTypeIds
{
    private static readonly (uint Id, TensorType Type)[] Known =
    [
        (0, TensorType.F32), (1, TensorType.F16), (2, TensorType.Q4_0), (3, TensorType.Q4_1),
        (6, TensorType.Q5_0), (7, TensorType.Q5_1), (8, TensorType.Q8_0),
        (10, TensorType.Q2_K), (11, TensorType.Q3_K), (12, TensorType.Q4_K), (13, TensorType.Q5_K), (14, TensorType.Q6_K),
        (16, TensorType.IQ2_XXS), (17, TensorType.IQ2_XS), (18, TensorType.IQ3_XXS), (19, TensorType.IQ1_S),
        (20, TensorType.IQ4_NL), (21, TensorType.IQ3_S), (22, TensorType.IQ2_S), (23, TensorType.IQ4_XS),
        (24, TensorType.I8), (25, TensorType.I16), (26, TensorType.I32), (27, TensorType.I64), (28, TensorType.F64),
        (29, TensorType.IQ1_M), (30, TensorType.BF16),
    ];

    /// <summary>
    /// Ids of types LlmShrink cannot read: ones ggml removed (Q4_2, Q4_3, the repacked Q4_0_N_M and IQ4_NL_N_M, which
    /// current ggml refuses in files too), the activation-only Q8_1 and Q8_K, the ternary TQ1_0/TQ2_0, and MXFP4 (added
    /// to ggml after commit c392e50).
    /// </summary>
    private static readonly (uint Id, string Name)[] Unread =
    [
        (4, "Q4_2"), (5, "Q4_3"), (9, "Q8_1"), (15, "Q8_K"), (31, "Q4_0_4_4"), (32, "Q4_0_4_8"), (33, "Q4_0_8_8"),
        (34, "TQ1_0"), (35, "TQ2_0"), (36, "IQ4_NL_4_4"), (37, "IQ4_NL_4_8"), (38, "IQ4_NL_8_8"), (39, "MXFP4"),
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

    /// <summary>ggml's name for the type with this id ("TQ1_0", "IQ4_XS"), or null for an id ggml never assigned.</summary>
    public static string? Name(uint id)
    {
        if (TryToTensorType(id, out var type)) return type.ToString();
        foreach (var (unreadId, name) in Unread)
            if (unreadId == id) return name;
        return null;
    }
}
