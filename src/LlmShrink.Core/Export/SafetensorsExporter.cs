using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using LlmShrink.Formats;
using LlmShrink.Formats.Gguf;
using LlmShrink.Formats.Safetensors;
using LlmShrink.Model;
using LlmShrink.Tokenization;
using LlmShrink.Representations;

namespace LlmShrink.Export;

/// <summary>
/// Writes a loaded model as a dense Hugging Face folder: config.json, the weights in one float dtype under their canonical
/// names (Q/K rows in rotate-half order, un-permuted when the source is interleaved, e.g. a GGUF llama file), sharded
/// with <c>model.safetensors.index.json</c> when they exceed the shard limit, and the tokenizer files. The folder is
/// built under a temporary name beside the target and renamed into place when complete. A compressed folder's packed
/// modules (GPTQ, W8A8, ggml blocks, low-rank factors, a compensated base + B·A; lm_head included) are written as the
/// dense weights they compute with, and its
/// <c>quantization_config</c> is dropped. See docs/FORMAT.md.
/// </summary>
public static class SafetensorsExporter
{
    public static readonly TensorType[] DTypes = [TensorType.F32, TensorType.F16, TensorType.BF16];
    public const long DefaultMaxShardBytes = 5_000_000_000;

    /// <summary>Files of a Hugging Face folder that describe the tokenizer and generation, copied unchanged.</summary>
    public static readonly string[] TokenizerFiles =
        ["tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "generation_config.json"];

    /// <param name="cancellation">Stops the write within a batch of rows; no folder is left behind.</param>
    public static void Export(LoadedModel model, TensorType dtype, string outputFolder, long maxShardBytes = DefaultMaxShardBytes,
        CancellationToken cancellation = default)
    {
        if (!DTypes.Contains(dtype))
            throw new ShrinkException($"--dtype {dtype}: not a safetensors export dtype (supported: {string.Join(", ", DTypes)})");
        if (maxShardBytes <= 0) throw new ShrinkException($"--max-shard-size must be positive, not {maxShardBytes}");
        var c = model.Config;
        if (model.Weights.Contains(TensorNames.RopeFrequencyFactors) && c.RopeScaling is null)
            throw ShrinkException.InFile(model.Source, "its RoPE frequency factors (rope_freqs) have no config.json equivalent; export to GGUF instead");

        using var output = new OutputFolder(outputFolder, model.Weights.Files.Select(f => f.Path).Append(model.Source));
        WriteWeights(model, dtype, output.Path, maxShardBytes, cancellation);
        var config = ConfigJson(model);
        config["torch_dtype"] = TorchDType(dtype);
        config.Remove("quantization_config"); // every module is dense now
        File.WriteAllText(output.File("config.json"), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        WriteTokenizer(model, output.Path);
        output.Commit();
    }

    private static void WriteWeights(LoadedModel model, TensorType dtype, string folder, long maxShardBytes, CancellationToken cancellation)
    {
        var c = model.Config;
        var entries = new List<SafetensorsWriter.Entry>();
        var written = new HashSet<string>(StringComparer.Ordinal); // compressed modules, each written once as its dense weight
        foreach (string name in model.Weights.Names.Order(StringComparer.Ordinal))
        {
            var tensor = model.Weights.Get(name);
            if (name == TensorNames.RopeFrequencyFactors) continue; // expressed by config.json's rope_scaling
            Func<long, long>? rows = name.EndsWith(TensorNames.Q, StringComparison.Ordinal) || name.EndsWith(TensorNames.K, StringComparison.Ordinal)
                ? RopeRowOrder.SourceRow(c.RopeStyle, RopeStyle.RotateHalf, c.HeadDim) : null;
            if (CompressedModule(model.Weights, name) is { } module)
            {
                // One entry per module, at its first tensor; the scales, zeros, factors and the rest are folded into it.
                if (written.Add(module)) entries.Add(Dequantized(model.Weights, module, dtype));
                continue;
            }
            entries.Add(new SafetensorsWriter.Entry(name, dtype, tensor.Shape, stream => TensorRowWriter.Write(stream, tensor, dtype, rows)));
        }

        WriteSharded(folder, entries, maxShardBytes, cancellation);
    }

    /// <summary>
    /// The module a tensor belongs to when that module is stored in a compressed representation, else null. Every suffix is
    /// tried, longest first, since one tensor name may end in several (<c>q_proj.lora_A.weight</c> ends in <c>.weight</c> too,
    /// <c>q_proj.lowrank_v.qweight</c> in <c>.qweight</c>) and the longest names the outermost module; a compensated module
    /// holds its base's tensors beside its factors.
    /// </summary>
    private static readonly string[] SuffixesLongestFirst = [.. LayerRepresentations.Suffixes.OrderByDescending(s => s.Length)];

    private static string? CompressedModule(TensorSet weights, string name)
    {
        foreach (string suffix in SuffixesLongestFirst)
            if (name.EndsWith(suffix, StringComparison.Ordinal) && LayerRepresentations.Find(weights, name[..^suffix.Length]) is { IsDense: false })
                return name[..^suffix.Length];
        return null;
    }

    /// <summary>
    /// A compressed module as <c>module.weight</c> [out, in] in <paramref name="dtype"/>: w = scale · level, the decoded
    /// ggml blocks, the product of low-rank factors, or a compensated module's base plus B·A, row by row (a compressed
    /// folder is already in rotate-half order, so Q/K rows stay where they are).
    /// </summary>
    private static SafetensorsWriter.Entry Dequantized(TensorSet weights, string module, TensorType dtype)
    {
        var representation = LayerRepresentations.Of(weights, module, module);
        var (outFeatures, inFeatures) = representation.Shape(weights, module);
        if (representation.StoredBlocks(weights, module) is { } blocks)
            return new SafetensorsWriter.Entry(module + ".weight", dtype, [outFeatures, inFeatures], stream => TensorRowWriter.Write(stream, blocks, dtype));
        if (representation.Multiplied(weights, module) is { } product)
            return new SafetensorsWriter.Entry(module + ".weight", dtype, [outFeatures, inFeatures], stream => TensorRowWriter.Write(stream, product(), inFeatures, dtype));
        return new SafetensorsWriter.Entry(module + ".weight", dtype, [outFeatures, inFeatures], stream =>
        {
            var matrix = ScaledIntegerMatrix.Read(weights, module);
            var scale = new float[inFeatures];
            var level = new int[inFeatures];
            var row = new float[inFeatures];
            var bytes = new byte[TensorTypes.ByteCount(dtype, inFeatures)];
            for (int r = 0; r < outFeatures; r++)
            {
                matrix.Row(r, scale, level);
                for (int i = 0; i < inFeatures; i++) row[i] = scale[i] * level[i];
                TensorEncoding.EncodeRow(dtype, row, bytes);
                stream.Write(bytes);
            }
        });
    }

    /// <summary>
    /// Writes <paramref name="entries"/> as one <c>model.safetensors</c>, or, when they exceed <paramref name="maxShardBytes"/>,
    /// as <c>model-0000k-of-0000N.safetensors</c> shards with <c>model.safetensors.index.json</c>. Greedy in the given
    /// order: a shard closes when the next tensor would take it past the limit (a tensor larger than the limit gets a
    /// shard of its own), as transformers' save_pretrained does.
    /// </summary>
    public static void WriteSharded(string folder, IReadOnlyList<SafetensorsWriter.Entry> entries, long maxShardBytes, CancellationToken cancellation = default)
    {
        var sizes = entries.Select(e => TensorTypes.ByteCount(e.Type, e.Shape.Aggregate(1L, (a, b) => checked(a * b)))).ToList();
        var shards = new List<List<int>> { new() };
        long shardBytes = 0;
        for (int i = 0; i < entries.Count; i++)
        {
            if (shardBytes > 0 && shardBytes + sizes[i] > maxShardBytes) { shards.Add(new()); shardBytes = 0; }
            shards[^1].Add(i);
            shardBytes += sizes[i];
        }
        if (shards.Count == 1)
        {
            SafetensorsWriter.Write(Path.Combine(folder, "model.safetensors"), entries, new Dictionary<string, string> { ["format"] = "pt" }, cancellation);
            return;
        }

        var weightMap = new JsonObject();
        for (int s = 0; s < shards.Count; s++)
        {
            string file = $"model-{s + 1:D5}-of-{shards.Count:D5}.safetensors";
            SafetensorsWriter.Write(Path.Combine(folder, file), shards[s].Select(i => entries[i]).ToList(), new Dictionary<string, string> { ["format"] = "pt" }, cancellation);
            foreach (int i in shards[s]) weightMap[entries[i].Name] = file;
        }
        var index = new JsonObject
        {
            ["metadata"] = new JsonObject { ["total_size"] = sizes.Sum() },
            ["weight_map"] = weightMap,
        };
        File.WriteAllText(Path.Combine(folder, SafetensorsIndex.FileName), index.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    private static string TorchDType(TensorType dtype) => dtype switch
    {
        TensorType.F16 => "float16",
        TensorType.BF16 => "bfloat16",
        _ => "float32",
    };

    /// <summary>
    /// From a Hugging Face folder: its config.json with every field kept — except, when the model's blocks no longer
    /// have the shapes it states (a structurally pruned model), the shape keys, written as <see cref="FromModelConfig"/>
    /// writes them. Otherwise a config written from <see cref="ModelConfig"/> with the keys transformers' config classes read.
    /// </summary>
    /// <param name="config">The model's configuration as written (a compression may have changed its block shapes); default the model's own.</param>
    public static JsonObject ConfigJson(LoadedModel model, ModelConfig? config = null)
    {
        config ??= model.Config;
        string original = Path.Combine(model.Source, "config.json");
        if (model.Format == "safetensors" && File.Exists(original))
        {
            var json = JsonNode.Parse(File.ReadAllBytes(original), documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true }) as JsonObject
                ?? throw ShrinkException.InFile(original, "not a JSON object");
            if (!SameShapes(HfConfig.Parse(original), config)) WriteShapes(json, config);
            return json;
        }
        return FromModelConfig(config);
    }

    private static bool SameShapes(ModelConfig a, ModelConfig b) =>
        a.NumLayers == b.NumLayers && a.HeadDim == b.HeadDim && Enumerable.Range(0, a.NumLayers).All(l => a.Layer(l) == b.Layer(l));

    /// <summary>
    /// The shape keys: the scalar ones (with per-block widths, the largest over the blocks), head_dim, and for blocks that
    /// differ <see cref="HfConfig.LayerShapesKey"/> = {"num_attention_heads": [...], "num_key_value_heads": [...],
    /// "intermediate_size": [...]}, one entry per layer.
    /// </summary>
    private static void WriteShapes(JsonObject json, ModelConfig c)
    {
        json["intermediate_size"] = c.IntermediateSize;
        json["num_hidden_layers"] = c.NumLayers;
        json["num_attention_heads"] = c.NumHeads;
        json["num_key_value_heads"] = c.NumKvHeads;
        json["head_dim"] = c.HeadDim;
        json.Remove(HfConfig.LayerShapesKey);
        if (c.IsUniform) return;
        JsonArray List(Func<LayerShape, int> width) => new(Enumerable.Range(0, c.NumLayers).Select(l => (JsonNode)width(c.Layer(l))).ToArray());
        json[HfConfig.LayerShapesKey] = new JsonObject
        {
            ["num_attention_heads"] = List(s => s.Heads),
            ["num_key_value_heads"] = List(s => s.KvHeads),
            ["intermediate_size"] = List(s => s.IntermediateSize),
        };
    }

    public static JsonObject FromModelConfig(ModelConfig c)
    {
        string className = c.Architecture switch { "mistral" => "MistralForCausalLM", "qwen2" => "Qwen2ForCausalLM", "qwen3" => "Qwen3ForCausalLM", _ => "LlamaForCausalLM" };
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray(className),
            ["model_type"] = c.Architecture,
            ["hidden_size"] = c.HiddenSize,
            ["intermediate_size"] = c.IntermediateSize,
            ["num_hidden_layers"] = c.NumLayers,
            ["num_attention_heads"] = c.NumHeads,
            ["num_key_value_heads"] = c.NumKvHeads,
            ["head_dim"] = c.HeadDim,
            ["vocab_size"] = c.VocabSize,
            ["max_position_embeddings"] = c.MaxPositions,
            ["rms_norm_eps"] = JsonNumber(c.RmsNormEps),
            ["rope_theta"] = JsonNumber(c.RopeTheta),
            ["tie_word_embeddings"] = c.TiedEmbeddings,
            ["hidden_act"] = "silu",
            ["bos_token_id"] = c.BosTokenId,
            ["eos_token_id"] = c.EosTokenId,
        };
        if (!c.IsUniform) WriteShapes(config, c);
        if (c.Architecture is "llama" or "mistral") { config["attention_bias"] = false; config["mlp_bias"] = false; }
        if (c.Architecture == "mistral") config["sliding_window"] = c.SlidingWindow;
        if (c.Architecture is "qwen2" or "qwen3" && c.SlidingWindow is { } window)
        {
            config["use_sliding_window"] = true;
            config["sliding_window"] = window;
            config["max_window_layers"] = 0;
        }
        if (c.RopeScaling is { } s)
            config["rope_scaling"] = new JsonObject
            {
                ["rope_type"] = "llama3",
                ["factor"] = JsonNumber(s.Factor),
                ["low_freq_factor"] = JsonNumber(s.LowFreqFactor),
                ["high_freq_factor"] = JsonNumber(s.HighFreqFactor),
                ["original_max_position_embeddings"] = s.OriginalMaxPositions,
            };
        return config;
    }

    /// <summary>A float as the shortest decimal that reads back to the same float32 (1e-05, not 9.999999747378752E-06).</summary>
    private static JsonNode JsonNumber(float value) => JsonNode.Parse(value.ToString("R", CultureInfo.InvariantCulture))!;

    /// <summary>LlmShrink's own files kept beside the weights by the exports of a compressed folder, so they still say how it was made.</summary>
    private static readonly string[] ProvenanceFiles = ["recipe.yaml", "report.md"];

    /// <summary>Copies the compressed folder's <c>recipe.yaml</c> and <c>report.md</c> (when present) into <paramref name="folder"/>.</summary>
    public static void CopyProvenance(LoadedModel model, string folder)
    {
        foreach (string file in ProvenanceFiles)
            if (Directory.Exists(model.Source) && File.Exists(Path.Combine(model.Source, file)))
                File.Copy(Path.Combine(model.Source, file), Path.Combine(folder, file));
    }

    /// <summary>
    /// Tokenizer files: copied from a Hugging Face folder; from a GGUF SentencePiece ("llama") vocabulary, a tokenizer.model
    /// rebuilt from its pieces, scores and types, and a tokenizer_config.json with its BOS/EOS and add_bos_token.
    /// </summary>
    public static void WriteTokenizer(LoadedModel model, string folder)
    {
        if (model.Format == "safetensors" && Directory.Exists(model.Source))
        {
            foreach (string file in TokenizerFiles)
            {
                string source = Path.Combine(model.Source, file);
                if (File.Exists(source)) File.Copy(source, Path.Combine(folder, file));
            }
            return;
        }
        if (model.Format != "gguf") return;
        using var gguf = GgufFile.Open(model.Source);
        var vocabulary = GgufModelLoader.ReadVocabulary(gguf);
        if (vocabulary is not { Model: "llama" }) return;
        var spm = TokenizerFactory.GgufSentencePiece(vocabulary, model.Source);
        File.WriteAllBytes(Path.Combine(folder, "tokenizer.model"), spm.ToProtobuf());
        var config = new JsonObject
        {
            ["tokenizer_class"] = "LlamaTokenizer",
            ["bos_token"] = spm.Pieces[vocabulary.BosId],
            ["eos_token"] = spm.Pieces[vocabulary.EosId],
            ["add_bos_token"] = vocabulary.AddBos,
            ["add_eos_token"] = false,
        };
        if (vocabulary.UnknownId is { } unknown) config["unk_token"] = spm.Pieces[unknown];
        File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }
}
