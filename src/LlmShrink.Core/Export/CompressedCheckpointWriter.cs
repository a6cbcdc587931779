using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using LlmShrink.Compression;
using LlmShrink.Formats;
using LlmShrink.Formats.Safetensors;
using LlmShrink.Model;
using LlmShrink.Representations;

namespace LlmShrink.Export;

/// <summary>
/// Writes a compressed model as a Hugging Face folder while the pipeline runs: one safetensors shard per decoder
/// block, written as soon as the block is compressed (so the quantized weights of earlier blocks need not stay in
/// memory), then a last shard with the embeddings, final norm and lm_head, the shard index, config.json with a
/// <c>quantization_config</c>, the tokenizer files, the recipe and the report. A compressed lm_head is stored like a
/// block linear; when the source ties it to the embeddings they are untied (embed_tokens kept as stored,
/// <c>tie_word_embeddings: false</c>). Quantized layers use the GPTQ v1
/// layout (qweight/qzeros/scales/g_idx); W8A8 layers an int8 <c>weight</c> with an F32 <c>weight_scale</c> [out, 1];
/// unchanged layers keep their stored bytes. Everything goes to a temporary folder renamed into place at the end.
/// See docs/FORMAT.md.
/// </summary>
public sealed class CompressedCheckpointWriter : IBlockSink, IDisposable
{
    private readonly LoadedModel _model;
    private readonly OutputFolder _output;
    private readonly int _shards;
    private readonly JsonObject _weightMap = new();
    private readonly List<(string Module, CompressedLayer? Layer)> _modules = new();
    private readonly List<SafetensorsWriter.Entry> _importance = new();
    private long _totalBytes;
    private CompressedLayer? _head;
    private float[]? _finalNorm;

    public CompressedCheckpointWriter(LoadedModel model, string outputFolder)
    {
        if (model.Config.RopeStyle != RopeStyle.RotateHalf)
            throw ShrinkException.InFile(model.Source, "compressing a GGUF or llama2.c llama model (permuted Q/K rows) into a Hugging Face folder is not supported yet; export it to safetensors first (llmshrink export --format safetensors)");
        _model = model;
        _output = new OutputFolder(outputFolder, model.Weights.Files.Select(f => f.Path).Append(model.Source));
        _shards = model.Config.NumLayers + 1;
    }

    /// <summary>
    /// The per-input-column mean x² of each compressed layer's calibration inputs (llama.cpp's importance matrix), kept
    /// out of the shards and the index so loaders of the model never see it; the GGUF export weights its re-fits by it.
    /// </summary>
    public const string ImportanceFile = "importance.safetensors";
    public const string ImportanceSuffix = ".input_importance";

    private string ShardName(int index) => $"model-{index + 1:D5}-of-{_shards:D5}.safetensors";

    public void BlockDone(int layer, TransformerBlock block, IReadOnlyList<CompressedLayer> layers)
    {
        var entries = new List<SafetensorsWriter.Entry>
        {
            Entries.Floats(TensorNames.Layer(layer, TensorNames.AttnNorm), block.AttnNorm),
            Entries.Floats(TensorNames.Layer(layer, TensorNames.FfnNorm), block.FfnNorm),
        };
        if (_model.Config.QkNorm)
        {
            entries.Add(Copy(TensorNames.Layer(layer, TensorNames.QNorm)));
            entries.Add(Copy(TensorNames.Layer(layer, TensorNames.KNorm)));
        }
        foreach (var role in LinearRoles.All)
        {
            string module = LinearRoles.ModulePath(layer, role);
            var result = layers.FirstOrDefault(l => l.Role == role);
            AddModule(entries, module, result);
            if (LinearRoles.BiasSuffix(role) is { } bias && _model.Weights.Contains(TensorNames.Layer(layer, bias)))
                entries.Add(result?.Bias is { } b ? Entries.Floats(TensorNames.Layer(layer, bias), b) : Copy(TensorNames.Layer(layer, bias)));
        }
        WriteShard(layer, entries);
    }

    /// <summary>Keeps the compressed lm_head and the final norm (a fold may have rescaled it) for the last shard.</summary>
    public void HeadDone(CompressedLayer head, float[] finalNorm)
    {
        _head = head;
        _finalNorm = finalNorm;
    }

    /// <summary>A linear module's tensors as its representation writes them, or (<paramref name="result"/> null) its stored weight copied.</summary>
    private void AddModule(List<SafetensorsWriter.Entry> entries, string module, CompressedLayer? result)
    {
        if (result is { Representation.IsDense: false, InputImportance: { } importance })
            _importance.Add(Entries.Floats(module + ImportanceSuffix, importance));
        if (result is null) entries.Add(Copy(module + ".weight"));
        else entries.AddRange(result.Tensors(module));
        _modules.Add((module, result));
    }

    /// <summary>Writes the last shard, index, config, tokenizer, recipe and report, and moves the folder into place.</summary>
    public void Finish(string recipeYaml, string reportMarkdown)
    {
        var rest = new List<SafetensorsWriter.Entry>
        {
            Copy(TensorNames.Embedding),
            _finalNorm is null ? Copy(TensorNames.FinalNorm) : Entries.Floats(TensorNames.FinalNorm, _finalNorm),
        };
        if (_head is not null) AddModule(rest, TensorNames.LmHeadModule, _head);
        else if (_model.Weights.Contains(TensorNames.LmHead)) rest.Add(Copy(TensorNames.LmHead));
        WriteShard(_shards - 1, rest);

        var index = new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = _totalBytes }, ["weight_map"] = _weightMap };
        var options = new JsonSerializerOptions { WriteIndented = true };
        File.WriteAllText(_output.File(SafetensorsIndex.FileName), index.ToJsonString(options));
        var config = SafetensorsExporter.ConfigJson(_model);
        if (_head is not null) config["tie_word_embeddings"] = false; // lm_head now has weights of its own
        if (QuantizationConfig() is { } quantization) config["quantization_config"] = quantization;
        File.WriteAllText(_output.File("config.json"), config.ToJsonString(options));
        SafetensorsExporter.WriteTokenizer(_model, _output.Path);
        if (_importance.Count > 0)
            SafetensorsWriter.Write(_output.File(ImportanceFile), _importance, new Dictionary<string, string> { ["format"] = "pt" });
        File.WriteAllText(_output.File("recipe.yaml"), recipeYaml);
        File.WriteAllText(_output.File("report.md"), reportMarkdown);
        _output.Commit();
    }

    /// <summary>
    /// The quantization_config loaders read: W8A8 layers → LlmShrink's own "llmshrink-w8a8" description; GPTQ layers →
    /// GPTQ's config for the most common scheme, as transformers/optimum and vLLM read it, with layers of another scheme
    /// or left float listed in GPTQModel's "dynamic" overrides ("+:regex" / "-:regex") and "lm_head" saying whether the
    /// output projection is quantized (<see cref="GptqSafetensorsExporter.QuantizationConfig"/>); float layers only
    /// (pruned or rescaled) → none.
    /// </summary>
    private JsonObject? QuantizationConfig()
    {
        var w8a8 = _modules.Where(m => m.Layer is W8A8Layer).Select(m => m.Module).ToList();
        if (w8a8.Count > 0)
            return new JsonObject
            {
                ["quant_method"] = "llmshrink-w8a8", ["weights"] = "int8 per output channel, symmetric", ["activations"] = "int8 per token, dynamic, symmetric",
                ["lm_head"] = w8a8.Contains(TensorNames.LmHeadModule),
            };
        var gptq = _modules.Where(m => m.Layer is QuantizedLayer).Select(m => GptqSafetensorsExporter.Describe(m.Module, ((QuantizedLayer)m.Layer!).Matrix)).ToList();
        if (gptq.Count == 0) return null;
        var dense = _modules.Where(m => m.Layer is null or { Representation.IsDense: true }).Select(m => m.Module).Where(m => m != TensorNames.LmHeadModule).ToList();
        return GptqSafetensorsExporter.QuantizationConfig(gptq, dense, _model.Config.NumLayers);
    }

    private void WriteShard(int index, List<SafetensorsWriter.Entry> entries)
    {
        string name = ShardName(index);
        SafetensorsWriter.Write(_output.File(name), entries, new Dictionary<string, string> { ["format"] = "pt" });
        foreach (var e in entries)
        {
            _weightMap[e.Name] = name;
            _totalBytes += TensorTypes.ByteCount(e.Type, e.Shape.Aggregate(1L, (a, b) => a * b));
        }
    }

    private SafetensorsWriter.Entry Copy(string name)
    {
        var t = _model.Weights.Get(name);
        return new SafetensorsWriter.Entry(name, t.Type, t.Shape, stream => TensorRowWriter.Write(stream, t, t.Type));
    }

    public void Dispose() => _output.Dispose();
}
