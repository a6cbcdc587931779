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
/// ggml-typed layers their blocks (<c>ggml_blocks</c>, <c>ggml_type</c>); unchanged layers keep their stored bytes; the
/// factors of compensated layers (EoRA) go to <see cref="CompensatedRepresentation.FileName"/>, outside the shards and the
/// index. Everything goes to a temporary folder renamed into place at the end. See docs/FORMAT.md.
/// </summary>
public sealed class CompressedCheckpointWriter : IBlockSink, IDisposable
{
    private readonly LoadedModel _model;
    private readonly OutputFolder _output;
    private readonly List<(string Tensor, int Shard)> _tensors = new();
    private readonly SortedSet<int> _removed = new();
    private readonly SortedDictionary<int, LayerShape> _shapes = new(); // each written block's widths, by its index in the folder
    private readonly List<ModuleScheme> _modules = new(); // what config.json says of each module, not the layer (gigabytes per block)
    private readonly List<SafetensorsWriter.Entry> _importance = new();
    private readonly List<SafetensorsWriter.Entry> _compensation = new();
    private long _totalBytes;
    private CompressedLayer? _head;
    private float[]? _finalNorm;

    public CompressedCheckpointWriter(LoadedModel model, string outputFolder)
    {
        if (model.Config.RopeStyle != RopeStyle.RotateHalf)
            throw ShrinkException.InFile(model.Source, "compressing a GGUF or llama2.c llama model (permuted Q/K rows) into a Hugging Face folder is not supported yet; export it to safetensors first (llmshrink export --format safetensors)");
        _model = model;
        _output = new OutputFolder(outputFolder, model.Weights.Files.Select(f => f.Path).Append(model.Source));
    }

    /// <summary>
    /// The per-input-column mean x² of each compressed layer's calibration inputs (llama.cpp's importance matrix), kept
    /// out of the shards and the index so loaders of the model never see it; the GGUF export weights its re-fits by it.
    /// </summary>
    public const string ImportanceFile = "importance.safetensors";
    public const string ImportanceSuffix = ".input_importance";

    /// <summary>A shard's file while blocks are still coming (the count of shards is known only at the end).</summary>
    private static string PartName(int index) => $"part-{index:D5}.safetensors";
    private static string ShardName(int index, int shards) => $"model-{index + 1:D5}-of-{shards:D5}.safetensors";

    /// <summary>Blocks the recipe removes (ShortGPT): the kept ones are renumbered 0, 1, … in the folder.</summary>
    public void BlocksRemoved(IReadOnlyCollection<int> layers) => _removed.UnionWith(layers);

    private int OutputLayer(int layer) => layer - _removed.Count(r => r < layer);

    public void BlockDone(int layer, TransformerBlock block, IReadOnlyList<CompressedLayer> layers)
    {
        int output = OutputLayer(layer);
        _shapes[output] = ShapeOf(layer, layers);
        string Out(string suffix) => TensorNames.Layer(output, suffix);
        var entries = new List<SafetensorsWriter.Entry>
        {
            Entries.Floats(Out(TensorNames.AttnNorm), block.AttnNorm),
            Entries.Floats(Out(TensorNames.FfnNorm), block.FfnNorm),
        };
        if (_model.Config.QkNorm)
        {
            entries.Add(Copy(TensorNames.Layer(layer, TensorNames.QNorm), Out(TensorNames.QNorm)));
            entries.Add(Copy(TensorNames.Layer(layer, TensorNames.KNorm), Out(TensorNames.KNorm)));
        }
        foreach (var role in LinearRoles.All)
        {
            var result = layers.FirstOrDefault(l => l.Role == role);
            AddModule(entries, LinearRoles.ModulePath(layer, role), LinearRoles.ModulePath(output, role), result);
            if (LinearRoles.BiasSuffix(role) is { } bias && _model.Weights.Contains(TensorNames.Layer(layer, bias)))
                entries.Add(result?.Bias is { } b ? Entries.Floats(Out(bias), b) : Copy(TensorNames.Layer(layer, bias), Out(bias)));
        }
        WriteShard(output, entries);
    }

    /// <summary>Keeps the compressed lm_head and the final norm (a fold may have rescaled it) for the last shard.</summary>
    public void HeadDone(CompressedLayer head, float[] finalNorm)
    {
        _head = head;
        _finalNorm = finalNorm;
    }

    /// <summary>The block's widths as its layers now have them (structured pruning narrows q/k/v/o or gate/up/down).</summary>
    private LayerShape ShapeOf(int layer, IReadOnlyList<CompressedLayer> layers)
    {
        var shape = _model.Config.Layer(layer);
        int headDim = _model.Config.HeadDim;
        foreach (var l in layers)
            shape = l.Role switch
            {
                LinearRole.Q => shape with { Heads = l.Rows / headDim },
                LinearRole.K => shape with { KvHeads = l.Rows / headDim },
                LinearRole.Gate => shape with { IntermediateSize = l.Rows },
                _ => shape,
            };
        return shape;
    }

    /// <summary>
    /// A linear module's tensors under <paramref name="module"/> (its name in the folder) as its representation writes them,
    /// or (<paramref name="result"/> null) the stored weight of <paramref name="source"/> copied.
    /// </summary>
    private void AddModule(List<SafetensorsWriter.Entry> entries, string source, string module, CompressedLayer? result)
    {
        if (result is { Representation.IsDense: false, InputImportance: { } importance })
            _importance.Add(Entries.Floats(module + ImportanceSuffix, importance));
        if (result is null) entries.Add(Copy(source + ".weight", module + ".weight"));
        else
            foreach (var entry in result.Tensors(module))
                (CompensatedRepresentation.IsFactor(entry.Name) ? _compensation : entries).Add(entry);
        _modules.Add(ModuleScheme.Of(module, result is CompensatedLayer c ? c.Base : result));
    }

    /// <summary>Writes the model (<see cref="WriteModel"/>), then the report, and moves the folder into place.</summary>
    public void Finish(string recipeYaml, string reportMarkdown)
    {
        WriteModel(recipeYaml);
        Commit(reportMarkdown);
    }

    /// <summary>The temporary folder being written: after <see cref="WriteModel"/> it loads as the finished model does.</summary>
    public string Folder => _output.Path;

    /// <summary>
    /// Writes the last shard, index, config (with the blocks' widths as written when structured pruning changed them),
    /// tokenizer and recipe, and names the shards model-k-of-N: a complete model in <see cref="Folder"/>, not yet in place.
    /// </summary>
    public void WriteModel(string recipeYaml)
    {
        var rest = new List<SafetensorsWriter.Entry>
        {
            Copy(TensorNames.Embedding, TensorNames.Embedding),
            _finalNorm is null ? Copy(TensorNames.FinalNorm, TensorNames.FinalNorm) : Entries.Floats(TensorNames.FinalNorm, _finalNorm),
        };
        if (_head is not null) AddModule(rest, TensorNames.LmHeadModule, TensorNames.LmHeadModule, _head);
        else if (_model.Weights.Contains(TensorNames.LmHead)) rest.Add(Copy(TensorNames.LmHead, TensorNames.LmHead));
        int shards = _model.Config.NumLayers - _removed.Count + 1;
        WriteShard(shards - 1, rest);

        var weightMap = new JsonObject();
        for (int i = 0; i < shards; i++) File.Move(_output.File(PartName(i)), _output.File(ShardName(i, shards)));
        foreach (var (tensor, shard) in _tensors) weightMap[tensor] = ShardName(shard, shards);
        var index = new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = _totalBytes }, ["weight_map"] = weightMap };
        var options = new JsonSerializerOptions { WriteIndented = true };
        File.WriteAllText(_output.File(SafetensorsIndex.FileName), index.ToJsonString(options));
        var c = _model.Config;
        bool reshaped = _removed.Count > 0 || _shapes.Any(s => s.Value != c.Layer(s.Key));
        var json = SafetensorsExporter.ConfigJson(_model, reshaped ? c.WithLayerShapes([.. _shapes.Values]) : c);
        if (_head is not null) json["tie_word_embeddings"] = false; // lm_head now has weights of its own
        if (QuantizationConfig() is { } quantization) json["quantization_config"] = quantization;
        File.WriteAllText(_output.File("config.json"), json.ToJsonString(options));
        SafetensorsExporter.WriteTokenizer(_model, _output.Path);
        if (_importance.Count > 0)
            SafetensorsWriter.Write(_output.File(ImportanceFile), _importance, new Dictionary<string, string> { ["format"] = "pt" });
        if (_compensation.Count > 0)
            SafetensorsWriter.Write(_output.File(CompensatedRepresentation.FileName), _compensation, new Dictionary<string, string> { ["format"] = "pt" });
        File.WriteAllText(_output.File("recipe.yaml"), recipeYaml);
    }

    /// <summary>Adds report.md (which may describe the written model, e.g. how it evaluates) and moves the folder into place.</summary>
    public void Commit(string reportMarkdown)
    {
        File.WriteAllText(_output.File("report.md"), reportMarkdown);
        _output.Commit();
    }

    /// <summary>
    /// The quantization_config loaders read: W8A8 layers → LlmShrink's own "llmshrink-w8a8" description; layers stored as
    /// ggml blocks → "llmshrink-ggml" with the block types used (no GPTQ loader could read those modules); GPTQ layers →
    /// GPTQ's config for the most common scheme, as transformers/optimum and vLLM read it, with layers of another scheme
    /// or left float listed in GPTQModel's "dynamic" overrides ("+:regex" / "-:regex") and "lm_head" saying whether the
    /// output projection is quantized (<see cref="GptqSafetensorsExporter.QuantizationConfig"/>); float layers only
    /// (pruned or rescaled) → none. A compensated layer counts as its base: the shards hold the base's tensors and GPTQ
    /// loaders must read them as such (the factors are in <see cref="CompensatedRepresentation.FileName"/>, which they never open).
    /// </summary>
    private JsonObject? QuantizationConfig()
    {
        var w8a8 = _modules.Where(m => m.W8A8).Select(m => m.Module).ToList();
        if (w8a8.Count > 0)
            return new JsonObject
            {
                ["quant_method"] = "llmshrink-w8a8", ["weights"] = "int8 per output channel, symmetric", ["activations"] = "int8 per token, dynamic, symmetric",
                ["lm_head"] = w8a8.Contains(TensorNames.LmHeadModule),
            };
        var ggml = _modules.Where(m => m.GgmlType is not null).ToList();
        if (ggml.Count > 0)
            return new JsonObject
            {
                ["quant_method"] = "llmshrink-ggml", ["weights"] = "llama.cpp block types, each module's in its ggml_type tensor",
                ["types"] = new JsonArray([.. ggml.Select(m => m.GgmlType!.Value.ToString()).Distinct().Order(StringComparer.Ordinal).Select(t => (JsonNode)t)]),
                ["lm_head"] = ggml.Any(m => m.Module == TensorNames.LmHeadModule),
            };
        var gptq = _modules.Where(m => m.Gptq is not null).Select(m => m.Gptq!).ToList();
        if (gptq.Count == 0) return null;
        var dense = _modules.Where(m => m.Dense).Select(m => m.Module).Where(m => m != TensorNames.LmHeadModule).ToList();
        return GptqSafetensorsExporter.QuantizationConfig(gptq, dense, _model.Config.NumLayers);
    }

    /// <summary>A written module as config.json describes it (a compensated layer as its base).</summary>
    private sealed record ModuleScheme(string Module, bool W8A8, TensorType? GgmlType, GptqSafetensorsExporter.GptqModule? Gptq, bool Dense)
    {
        public static ModuleScheme Of(string module, CompressedLayer? layer) => new(module, layer is W8A8Layer, (layer as GgmlTypeLayer)?.Type,
            layer is QuantizedLayer q ? GptqSafetensorsExporter.Describe(module, q.Matrix) : null, layer is null or { Representation.IsDense: true });
    }

    private void WriteShard(int index, List<SafetensorsWriter.Entry> entries)
    {
        SafetensorsWriter.Write(_output.File(PartName(index)), entries, new Dictionary<string, string> { ["format"] = "pt" });
        foreach (var e in entries)
        {
            _tensors.Add((e.Name, index));
            _totalBytes += TensorTypes.ByteCount(e.Type, e.Shape.Aggregate(1L, (a, b) => a * b));
        }
    }

    /// <summary>The source's tensor <paramref name="name"/>, stored bytes unchanged, under <paramref name="outputName"/>.</summary>
    private SafetensorsWriter.Entry Copy(string name, string outputName)
    {
        var t = _model.Weights.Get(name);
        return new SafetensorsWriter.Entry(outputName, t.Type, t.Shape, stream => TensorRowWriter.Write(stream, t, t.Type));
    }

    public void Dispose() => _output.Dispose();
}
