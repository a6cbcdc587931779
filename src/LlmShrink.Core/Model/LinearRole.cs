namespace LlmShrink.Model;

/// <summary>The seven linear layers of a decoder block, and the output projection after the last block.</summary>
public enum LinearRole { Q, K, V, O, Gate, Up, Down, LmHead }

/// <summary>
/// Where a linear layer's input comes from. Layers that share an input site see the same activations, so their
/// calibration statistics (Hessian, channel magnitudes) are gathered once, and AWQ/SmoothQuant scale them together.
/// </summary>
public enum InputSite
{
    /// <summary>input_layernorm output, read by q/k/v.</summary>
    AttentionInput,
    /// <summary>attention output, read by o_proj.</summary>
    AttentionOutput,
    /// <summary>post_attention_layernorm output, read by gate/up.</summary>
    MlpInput,
    /// <summary>SiLU(gate)·up, read by down_proj.</summary>
    MlpHidden,
    /// <summary>The final norm's output (model.norm), read by lm_head.</summary>
    LmHeadInput,
}

public static class LinearRoles
{
    /// <summary>The block linears ("Linear" in a recipe); lm_head is not one of them.</summary>
    public static readonly LinearRole[] All = [LinearRole.Q, LinearRole.K, LinearRole.V, LinearRole.O, LinearRole.Gate, LinearRole.Up, LinearRole.Down];

    /// <summary>lm_head's module path, which is also its name in recipes.</summary>
    public const string LmHeadModule = TensorNames.LmHeadModule;

    public static InputSite Site(LinearRole role) => role switch
    {
        LinearRole.Q or LinearRole.K or LinearRole.V => InputSite.AttentionInput,
        LinearRole.O => InputSite.AttentionOutput,
        LinearRole.Gate or LinearRole.Up => InputSite.MlpInput,
        LinearRole.Down => InputSite.MlpHidden,
        _ => InputSite.LmHeadInput,
    };

    /// <summary>Hugging Face module name, e.g. "q_proj" — what recipe targets match against.</summary>
    public static string ModuleName(LinearRole role) => role switch
    {
        LinearRole.Q => "q_proj", LinearRole.K => "k_proj", LinearRole.V => "v_proj", LinearRole.O => "o_proj",
        LinearRole.Gate => "gate_proj", LinearRole.Up => "up_proj", LinearRole.Down => "down_proj", _ => LmHeadModule,
    };

    /// <summary>Canonical weight tensor name suffix of a block linear, e.g. "self_attn.q_proj.weight".</summary>
    public static string WeightSuffix(LinearRole role) => role switch
    {
        LinearRole.Q => TensorNames.Q, LinearRole.K => TensorNames.K, LinearRole.V => TensorNames.V, LinearRole.O => TensorNames.O,
        LinearRole.Gate => TensorNames.Gate, LinearRole.Up => TensorNames.Up, LinearRole.Down => TensorNames.Down,
        _ => throw new ArgumentOutOfRangeException(nameof(role), "lm_head is not a block linear"),
    };

    /// <summary>Module path without ".weight", e.g. "model.layers.3.self_attn.q_proj"; "lm_head" for the output projection (any layer).</summary>
    public static string ModulePath(int layer, LinearRole role) =>
        role == LinearRole.LmHead ? LmHeadModule : TensorNames.Layer(layer, WeightSuffix(role))[..^".weight".Length];

    public static string? BiasSuffix(LinearRole role) => role switch
    {
        LinearRole.Q => TensorNames.QBias, LinearRole.K => TensorNames.KBias, LinearRole.V => TensorNames.VBias, _ => null,
    };

    public static Linear Get(TransformerBlock block, LinearRole role) => role switch
    {
        LinearRole.Q => block.Q, LinearRole.K => block.K, LinearRole.V => block.V, LinearRole.O => block.O,
        LinearRole.Gate => block.Gate, LinearRole.Up => block.Up, LinearRole.Down => block.Down,
        _ => throw new ArgumentOutOfRangeException(nameof(role), "lm_head is not in a block"),
    };

    public static void Set(TransformerBlock block, LinearRole role, Linear linear)
    {
        switch (role)
        {
            case LinearRole.Q: block.Q = linear; break;
            case LinearRole.K: block.K = linear; break;
            case LinearRole.V: block.V = linear; break;
            case LinearRole.O: block.O = linear; break;
            case LinearRole.Gate: block.Gate = linear; break;
            case LinearRole.Up: block.Up = linear; break;
            case LinearRole.Down: block.Down = linear; break;
            default: throw new ArgumentOutOfRangeException(nameof(role), "lm_head is not in a block");
        }
    }
}
