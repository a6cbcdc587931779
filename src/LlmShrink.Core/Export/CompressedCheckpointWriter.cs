using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using LlmShrink.Compression;
using LlmShrink.Compression.Quantization;
using LlmShrink.Formats;
using LlmShrink.Formats.Safetensors;
using LlmShrink.Model;

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
    private readonly List<(string Module, QuantScheme Scheme, bool ActOrder)> _quantized = new();
    private readonly List<string> _w8a8 = new(), _dense = new();
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
            Floats(TensorNames.Layer(layer, TensorNames.AttnNorm), block.AttnNorm),
            Floats(TensorNames.Layer(layer, TensorNames.FfnNorm), block.FfnNorm),
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
                entries.Add(result?.Bias is { } b ? Floats(TensorNames.Layer(layer, bias), b) : Copy(TensorNames.Layer(layer, bias)));
        }
        WriteShard(layer, entries);
    }

    /// <summary>Keeps the compressed lm_head and the final norm (a fold may have rescaled it) for the last shard.</summary>
    public void HeadDone(CompressedLayer head, float[] finalNorm)
    {
        _head = head;
        _finalNorm = finalNorm;
    }

    /// <summary>A linear module's tensors: packed, W8A8, dense F32, or (<paramref name="result"/> null) its stored weight copied.</summary>
    private void AddModule(List<SafetensorsWriter.Entry> entries, string module, CompressedLayer? result)
    {
        if (result is QuantizedLayer or W8A8Layer && result.InputImportance is { } importance)
            _importance.Add(Floats(module + ImportanceSuffix, importance));
        switch (result)
        {
            case QuantizedLayer q:
                {
                    var packed = GptqPacking.Pack(q.Matrix);
                    entries.Add(Ints(module + ".qweight", packed.QWeight, [packed.QWeight.Length / packed.OutFeatures, packed.OutFeatures]));
                    entries.Add(Ints(module + ".qzeros", packed.QZeros, [packed.GroupCount, packed.QZeros.Length / packed.GroupCount]));
                    entries.Add(Raw(module + ".scales", TensorType.F16, [packed.GroupCount, packed.OutFeatures], MemoryMarshal.AsBytes(packed.Scales.AsSpan()).ToArray()));
                    entries.Add(Ints(module + ".g_idx", packed.GIdx, [packed.InFeatures]));
                    bool actOrder = packed.GIdx.Select((g, i) => g != i / q.Matrix.Scheme.GroupWidth(q.Matrix.Columns)).Any(x => x);
                    _quantized.Add((module, q.Matrix.Scheme, actOrder));
                    break;
                }
            case W8A8Layer w:
                entries.Add(Raw(module + ".weight", TensorType.I8, [w.Rows, w.Columns], MemoryMarshal.AsBytes(w.Weights.AsSpan()).ToArray()));
                entries.Add(Floats(module + ".weight_scale", w.Scales, [w.Rows, 1]));
                _w8a8.Add(module);
                break;
            case DenseLayer d:
                entries.Add(Floats(module + ".weight", d.Weights, [d.Rows, d.Columns]));
                _dense.Add(module);
                break;
            default:
                entries.Add(Copy(module + ".weight"));
                _dense.Add(module);
                break;
        }
    }

    /// <summary>Writes the last shard, index, config, tokenizer, recipe and report, and moves the folder into place.</summary>
    public void Finish(string recipeYaml, string reportMarkdown)
    {
        var rest = new List<SafetensorsWriter.Entry>
        {
            Copy(TensorNames.Embedding),
            _finalNorm is null ? Copy(TensorNames.FinalNorm) : Floats(TensorNames.FinalNorm, _finalNorm),
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
    /// GPTQ's quantization_config for the most common scheme, as transformers/optimum and vLLM read it; layers with
    /// another scheme or left unquantized are listed in GPTQModel's "dynamic" overrides ("+:regex" / "-:regex");
    /// "lm_head" (transformers/optimum's GPTQConfig field) says whether the output projection is quantized too.
    /// </summary>
    private JsonObject? QuantizationConfig()
    {
        if (_w8a8.Count > 0)
            return new JsonObject
            {
                ["quant_method"] = "llmshrink-w8a8", ["weights"] = "int8 per output channel, symmetric", ["activations"] = "int8 per token, dynamic, symmetric",
                ["lm_head"] = _w8a8.Contains(TensorNames.LmHeadModule),
            };
        if (_quantized.Count == 0) return null;
        var common = _quantized.GroupBy(q => q.Scheme).OrderByDescending(g => g.Count()).First().Key;
        var config = new JsonObject
        {
            ["quant_method"] = "gptq",
            ["checkpoint_format"] = "gptq",
            ["bits"] = common.Bits,
            ["group_size"] = common.Granularity == QuantGranularity.PerGroup ? common.GroupSize : -1,
            ["desc_act"] = _quantized.Any(q => q.ActOrder),
            ["sym"] = common.Symmetric,
            ["true_sequential"] = false,
            ["lm_head"] = _quantized.Any(q => q.Module == TensorNames.LmHeadModule),
        };
        var dynamic = new JsonObject();
        foreach (var (module, scheme, _) in _quantized.Where(q => q.Scheme != common))
            dynamic["+:" + System.Text.RegularExpressions.Regex.Escape(module)] = new JsonObject
            {
                ["bits"] = scheme.Bits,
                ["group_size"] = scheme.Granularity == QuantGranularity.PerGroup ? scheme.GroupSize : -1,
                ["sym"] = scheme.Symmetric,
            };
        foreach (var module in _dense) dynamic["-:" + System.Text.RegularExpressions.Regex.Escape(module)] = new JsonObject();
        if (dynamic.Count > 0) config["dynamic"] = dynamic;
        return config;
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

    private static SafetensorsWriter.Entry Floats(string name, float[] values, long[]? shape = null) =>
        Raw(name, TensorType.F32, shape ?? [values.Length], MemoryMarshal.AsBytes(values.AsSpan()).ToArray());

    private static SafetensorsWriter.Entry Ints(string name, int[] values, long[] shape) =>
        Raw(name, TensorType.I32, shape, MemoryMarshal.AsBytes(values.AsSpan()).ToArray());

    private static SafetensorsWriter.Entry Raw(string name, TensorType type, long[] shape, byte[] bytes) =>
        new(name, type, shape, stream => stream.Write(bytes));

    public void Dispose() => _output.Dispose();
}
