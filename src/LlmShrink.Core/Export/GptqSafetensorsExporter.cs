using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using LlmShrink.Compression.Quantization;
using LlmShrink.Formats;
using LlmShrink.Formats.Safetensors;
using LlmShrink.Model;
using LlmShrink.Representations;

namespace LlmShrink.Export;

/// <summary>
/// Writes a GPTQ-compressed model as the GPTQ v1 Hugging Face folder that transformers/optimum, GPTQModel and vLLM
/// load: every tensor copied byte for byte (packed <c>qweight</c>/<c>qzeros</c>/<c>scales</c>/<c>g_idx</c>, dense
/// tensors and biases in their stored dtype) and re-sharded at the size limit, config.json with a
/// <c>quantization_config</c> read off the tensors themselves (bits and group size from the shapes, sym from the zero
/// points, desc_act from g_idx), GPTQModel's <c>dynamic</c> overrides for modules that differ, quantize_config.json
/// for AutoGPTQ, and the tokenizer. A dense model is refused: quantizing is <c>llmshrink compress</c>'s job. A compensated
/// module (EoRA) is written as its GPTQ base; its factors are an adapter, exported by <see cref="PeftLoraExporter"/>.
/// See docs/FORMAT.md, "Export: GPTQ safetensors".
/// </summary>
public static class GptqSafetensorsExporter
{
    /// <summary>One quantized module's GPTQ parameters as its tensors state them.</summary>
    public sealed record GptqModule(string Module, int Bits, int GroupSize, bool Symmetric, bool ActOrder);

    /// <param name="cancellation">Stops the write within a batch of rows; no folder is left behind.</param>
    public static void Export(LoadedModel model, string outputFolder, long maxShardBytes = SafetensorsExporter.DefaultMaxShardBytes,
        CancellationToken cancellation = default)
    {
        if (maxShardBytes <= 0) throw new ShrinkException($"--max-shard-size must be positive, not {maxShardBytes}");
        var (quantized, dense) = Survey(model);

        using var output = new OutputFolder(outputFolder, model.Weights.Files.Select(f => f.Path).Append(model.Source));
        var entries = model.Weights.Names.Where(name => !CompensatedRepresentation.IsFactor(name)).Order(StringComparer.Ordinal).Select(name =>
        {
            var tensor = model.Weights.Get(name);
            return new SafetensorsWriter.Entry(name, tensor.Type, tensor.Shape, stream => TensorRowWriter.Write(stream, tensor, tensor.Type));
        }).ToList();
        SafetensorsExporter.WriteSharded(output.Path, entries, maxShardBytes, cancellation);

        var quantization = QuantizationConfig(quantized, dense, model.Config.NumLayers);
        var config = SafetensorsExporter.ConfigJson(model);
        config["quantization_config"] = quantization;
        var options = new JsonSerializerOptions { WriteIndented = true };
        File.WriteAllText(output.File("config.json"), config.ToJsonString(options));
        File.WriteAllText(output.File("quantize_config.json"), quantization.ToJsonString(options));
        SafetensorsExporter.WriteTokenizer(model, output.Path);
        SafetensorsExporter.CopyProvenance(model, output.Path);
        output.Commit();
    }

    /// <summary>
    /// Every decoder linear module as GPTQ-quantized (with its parameters) or dense, and lm_head when it is quantized (a dense
    /// lm_head is the loaders' default and is not listed); W8A8 and dense-only models are refused. A compensated module is
    /// described by its base.
    /// </summary>
    public static (List<GptqModule> Quantized, List<string> Dense) Survey(LoadedModel model)
    {
        var quantized = new List<GptqModule>();
        var dense = new List<string>();
        var other = new List<(string Module, string Representation)>();
        for (int layer = 0; layer < model.Config.NumLayers; layer++)
            foreach (var role in LinearRoles.All)
            {
                string module = LinearRoles.ModulePath(layer, role);
                var representation = LayerRepresentations.Of(model.Weights, module, model.Source).Base(model.Weights, module);
                if (representation is GptqRepresentation) quantized.Add(Describe(module, GptqRepresentation.Read(model.Weights, module)));
                else if (representation.IsDense) dense.Add(module);
                else other.Add((module, representation.Name));
            }
        if (LayerRepresentations.Find(model.Weights, TensorNames.LmHeadModule) is { } found)
        {
            var head = found.Base(model.Weights, TensorNames.LmHeadModule);
            if (head is GptqRepresentation) quantized.Add(Describe(TensorNames.LmHeadModule, GptqRepresentation.Read(model.Weights, TensorNames.LmHeadModule)));
            else if (!head.IsDense) other.Add((TensorNames.LmHeadModule, head.Name));
        }
        if (other.Count > 0)
            throw ShrinkException.InFile(model.Source, $"{other.Count} module(s) stored as {string.Join("/", other.Select(o => o.Representation).Distinct())} (e.g. {other[0].Module}) have no GPTQ form; export this folder with --format gguf, or compress with a GPTQ or RTN recipe");
        if (quantized.Count == 0)
            throw ShrinkException.InFile(model.Source, "has no GPTQ-quantized layers; run `llmshrink compress MODEL --recipe w4g128-gptq --calib FILE --out DIR` first and export that folder");
        return (quantized, dense);
    }

    /// <summary>A quantized module's GPTQ parameters as its codes and grids state them.</summary>
    public static GptqModule Describe(string module, QuantizedMatrix m) =>
        new(module, m.Scheme.Bits, GptqRepresentation.GroupSize(m), GptqRepresentation.IsSymmetric(m), GptqRepresentation.IsActOrder(m));

    /// <summary>
    /// The quantization_config: the most common (bits, group_size, sym) at the top level, desc_act true when any module
    /// is act-ordered (kernels then honour g_idx; a trivial g_idx gives the same result), GPTQModel/vLLM "dynamic"
    /// overrides ("+:regex" → other parameters, "-:regex" → left dense), and for optimum, which knows no "dynamic",
    /// <c>modules_in_block_to_quantize</c> when the same modules are dense in every block. "lm_head" is true when lm_head is
    /// among the quantized modules (transformers/optimum then replace it by a quantized layer too).
    /// </summary>
    public static JsonObject QuantizationConfig(IReadOnlyList<GptqModule> quantized, IReadOnlyList<string> dense, int layers)
    {
        var common = quantized.GroupBy(q => (q.Bits, q.GroupSize, q.Symmetric)).OrderByDescending(g => g.Count()).First().Key;
        var config = new JsonObject
        {
            ["quant_method"] = "gptq",
            ["checkpoint_format"] = "gptq",
            ["bits"] = common.Bits,
            ["group_size"] = common.GroupSize,
            ["desc_act"] = quantized.Any(q => q.ActOrder),
            ["sym"] = common.Symmetric,
            ["lm_head"] = quantized.Any(q => q.Module == TensorNames.LmHeadModule),
        };
        var dynamic = new JsonObject();
        foreach (var q in quantized.Where(q => (q.Bits, q.GroupSize, q.Symmetric) != common))
            dynamic["+:" + Regex.Escape(q.Module)] = new JsonObject { ["bits"] = q.Bits, ["group_size"] = q.GroupSize, ["sym"] = q.Symmetric };
        foreach (string module in dense) dynamic["-:" + Regex.Escape(module)] = new JsonObject();
        if (dynamic.Count > 0) config["dynamic"] = dynamic;

        // Module names inside a block ("self_attn.q_proj"); optimum's list form only works when every block agrees.
        var perBlock = quantized.Select(q => q.Module).Where(m => m != TensorNames.LmHeadModule).GroupBy(BlockOf).Select(g => g.Select(InBlock).Order(StringComparer.Ordinal).ToList()).ToList();
        if (dense.Count > 0 && perBlock.Count == layers && perBlock.All(b => b.SequenceEqual(perBlock[0])))
            config["modules_in_block_to_quantize"] = new JsonArray(new JsonArray(perBlock[0].Select(n => (JsonNode)n!).ToArray()));
        return config;
    }

    private static string BlockOf(string module) => string.Join('.', module.Split('.').Take(3)); // "model.layers.N"
    private static string InBlock(string module) => string.Join('.', module.Split('.').Skip(3));
}
