using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using LlmShrink.Formats;
using LlmShrink.Formats.Safetensors;
using LlmShrink.Model;

namespace LlmShrink.Export;

/// <summary>
/// Writes a compressed model's compensation (<see cref="CompensationAdapter"/>) as a PEFT LoRA adapter folder that PEFT
/// (<c>PeftModel.from_pretrained</c>) and vLLM (<c>--enable-lora --lora-modules</c>) load on top of the base — the compressed
/// folder itself or its <c>--format safetensors-gptq</c> export: <c>adapter_model.safetensors</c> with
/// <c>base_model.model.&lt;module&gt;.lora_A.weight</c> [r, in] and <c>.lora_B.weight</c> [out, r] (PEFT's own names, in the
/// factors' stored dtype, bytes copied), and <c>adapter_config.json</c> with lora_alpha = r, so PEFT's scaling alpha/r is 1
/// and the adapted module computes base(x) + B·A·x. See docs/FORMAT.md, "Export: PEFT LoRA adapter".
/// </summary>
public static class PeftLoraExporter
{
    /// <summary>PEFT's prefix of a causal LM's module paths (PeftModel.base_model → LoraModel.model).</summary>
    private const string Prefix = "base_model.model.";

    /// <param name="baseModel">adapter_config.json's <c>base_model_name_or_path</c>; default the model folder's full path.</param>
    /// <param name="cancellation">Stops the write within a batch of rows; no folder is left behind.</param>
    public static void Export(LoadedModel model, string outputFolder, string? baseModel = null, CancellationToken cancellation = default)
    {
        var (modules, rank) = CompensationAdapter.Read(model);
        using var output = new OutputFolder(outputFolder, model.Weights.Files.Select(f => f.Path).Append(model.Source));
        var entries = modules.SelectMany(m => new[] { (Suffix: ".lora_A.weight", Tensor: m.A), (Suffix: ".lora_B.weight", Tensor: m.B) }
            .Select(f => new SafetensorsWriter.Entry(Prefix + m.Path + f.Suffix, f.Tensor.Type, f.Tensor.Shape, stream => TensorRowWriter.Write(stream, f.Tensor, f.Tensor.Type)))).ToList();
        SafetensorsWriter.Write(output.File("adapter_model.safetensors"), entries, new Dictionary<string, string> { ["format"] = "pt" }, cancellation);
        var config = Config(model.Config, modules, rank, baseModel ?? Path.GetFullPath(model.Source));
        File.WriteAllText(output.File("adapter_config.json"), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        output.Commit();
    }

    /// <summary>
    /// PEFT's LoraConfig as it saves it: r, lora_alpha = r (scaling 1), no dropout, no bias, fan_in_fan_out false (the
    /// modules are nn.Linear-like, weight [out, in]), no rsLoRA or DoRA, inference mode. target_modules lists module names
    /// (<c>q_proj</c>, …) when every module of those names is compensated; otherwise it is a regular expression PEFT
    /// full-matches against module paths, naming exactly the compensated ones (a name alone would add zero-initialized
    /// adapters to the others).
    /// </summary>
    public static JsonObject Config(ModelConfig c, IReadOnlyList<CompensationAdapter.Module> modules, int rank, string baseModel)
    {
        var names = modules.Select(m => m.Name).Distinct().Order(StringComparer.Ordinal).ToList();
        var compensated = modules.Select(m => m.Path).ToHashSet(StringComparer.Ordinal);
        bool whole = CompensationAdapter.ModulePaths(c).Where(p => names.Contains(p[(p.LastIndexOf('.') + 1)..])).All(compensated.Contains);
        JsonNode targets = whole
            ? new JsonArray([.. names.Select(n => (JsonNode)n)])
            : string.Join("|", modules.Select(m => Regex.Escape(m.Path)));
        return new JsonObject
        {
            ["alpha_pattern"] = new JsonObject(),
            ["base_model_name_or_path"] = baseModel,
            ["bias"] = "none",
            ["fan_in_fan_out"] = false,
            ["inference_mode"] = true,
            ["init_lora_weights"] = true,
            ["layers_pattern"] = null,
            ["layers_to_transform"] = null,
            ["lora_alpha"] = rank,
            ["lora_dropout"] = 0.0,
            ["modules_to_save"] = null,
            ["peft_type"] = "LORA",
            ["r"] = rank,
            ["rank_pattern"] = new JsonObject(),
            ["revision"] = null,
            ["target_modules"] = targets,
            ["task_type"] = "CAUSAL_LM",
            ["use_dora"] = false,
            ["use_rslora"] = false,
        };
    }
}
