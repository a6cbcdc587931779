using System.Text.RegularExpressions;
using LlmShrink.Model;

namespace LlmShrink.Planning;

/// <summary>
/// The unit the planner decides for: layers of one block that must share a scheme. In a Hugging Face folder vLLM fuses
/// q/k/v into one QKV matmul and gate/up into one, and a fused layer has one quantization scheme, so those share one
/// choice; o_proj and down_proj are groups of their own. A GGUF file stores every tensor with its own type, so there
/// each linear is a group.
/// </summary>
public sealed record LayerGroup(int Layer, string Name, IReadOnlyList<LinearRole> Roles)
{
    /// <summary>"model.layers.3.self_attn.qkv" style label for reports.</summary>
    public string Label => Roles is [LinearRole.LmHead] ? LinearRoles.LmHeadModule : Roles.Count == 1 ? LinearRoles.ModulePath(Layer, Roles[0]) : $"{LinearRoles.ModulePath(Layer, Roles[0])[..^LinearRoles.ModuleName(Roles[0]).Length]}{Name}";

    /// <summary>A recipe target selecting exactly these layers: "re:" and an anchored alternation of their module paths.</summary>
    public string Target => "re:^(" + string.Join("|", Roles.Select(r => Regex.Escape(LinearRoles.ModulePath(Layer, r)))) + ")$";

    /// <param name="head">Plan lm_head too (a group of its own after the last block).</param>
    public static IReadOnlyList<LayerGroup> Of(ModelConfig config, bool fused, bool head = false) =>
        [.. Enumerable.Range(0, config.NumLayers).SelectMany(layer => fused
            ? new[]
            {
                new LayerGroup(layer, "qkv_proj", [LinearRole.Q, LinearRole.K, LinearRole.V]),
                new LayerGroup(layer, "o_proj", [LinearRole.O]),
                new LayerGroup(layer, "gate_up_proj", [LinearRole.Gate, LinearRole.Up]),
                new LayerGroup(layer, "down_proj", [LinearRole.Down]),
            }
            : LinearRoles.All.Select(r => new LayerGroup(layer, LinearRoles.ModuleName(r), [r]))),
            .. head ? [new LayerGroup(config.NumLayers, LinearRoles.LmHeadModule, [LinearRole.LmHead])] : Array.Empty<LayerGroup>()];
}
