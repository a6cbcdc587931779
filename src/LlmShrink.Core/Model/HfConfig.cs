using System.Text.Json;

namespace LlmShrink.Model;

/// <summary>
/// Reads a Hugging Face <c>config.json</c> into a <see cref="ModelConfig"/>. Keys and defaults follow the
/// transformers configuration classes (LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config), so a key the
/// checkpoint omits means what it means to transformers. Anything that would change the math in a way
/// <see cref="ModelConfig"/> cannot express (other RoPE scalings, biases on o_proj or the MLP, other activations)
/// is refused rather than silently computed wrong.
/// </summary>
public static class HfConfig
{
    private const int MaxConfigBytes = 16 * 1024 * 1024;

    public static ModelConfig Parse(string configJsonPath)
    {
        var info = new FileInfo(configJsonPath);
        if (!info.Exists) throw ShrinkException.InFile(configJsonPath, "file not found");
        if (info.Length > MaxConfigBytes) throw ShrinkException.InFile(configJsonPath, $"{info.Length} bytes is too large for a model config");

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(File.ReadAllBytes(configJsonPath),
                new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        }
        catch (JsonException e) { throw ShrinkException.InFile(configJsonPath, $"not valid JSON ({e.Message.ReplaceLineEndings(" ")})"); }

        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object) throw ShrinkException.InFile(configJsonPath, "not a JSON object");
            var config = FromJson(new Keys(document.RootElement, configJsonPath, ""));
            config.Validate(configJsonPath);
            return config;
        }
    }

    private static ModelConfig FromJson(Keys json)
    {
        string architecture = json.String("model_type") ?? throw json.Error("missing 'model_type'");
        if (architecture is not ("llama" or "mistral" or "qwen2" or "qwen3"))
            throw json.Error($"unsupported architecture '{architecture}' (supported: llama, mistral, qwen2, qwen3)");

        string activation = json.String("hidden_act") ?? "silu";
        if (activation != "silu") throw json.Error($"hidden_act '{activation}' is not supported (only silu)");
        if (json.Bool("mlp_bias") == true) throw json.Error("mlp_bias is not supported");

        int hidden = json.RequiredInt("hidden_size");
        int heads = json.RequiredInt("num_attention_heads");
        int layers = json.RequiredInt("num_hidden_layers");
        // Qwen3Config is the one class whose head_dim does not default to hidden_size / heads.
        int? headDim = json.Int("head_dim") ?? (architecture == "qwen3" ? 128 : null);
        if (headDim is null && (heads <= 0 || hidden % heads != 0))
            throw json.Error($"hidden_size {hidden} is not divisible by num_attention_heads {heads} and there is no head_dim");

        // Qwen2 always has q/k/v biases; Llama and Qwen3's attention_bias would also put one on o_proj.
        bool attentionBias = architecture == "qwen2";
        if (architecture != "qwen2" && json.Bool("attention_bias") == true)
            throw json.Error("attention_bias (biases on q/k/v/o projections) is not supported for " + architecture);

        var (ropeTheta, ropeScaling) = Rope(json);
        var config = new ModelConfig
        {
            Architecture = architecture,
            HiddenSize = hidden,
            IntermediateSize = json.RequiredInt("intermediate_size"),
            NumLayers = layers,
            NumHeads = heads,
            NumKvHeads = json.Int("num_key_value_heads") ?? heads,
            HeadDim = headDim ?? hidden / heads,
            VocabSize = json.RequiredInt("vocab_size"),
            MaxPositions = json.Int("max_position_embeddings") ?? architecture switch { "llama" => 2048, "mistral" => 4096 * 32, _ => 32768 },
            RmsNormEps = json.Float("rms_norm_eps") ?? 1e-6f,
            RopeTheta = ropeTheta,
            RopeScaling = ropeScaling,
            RopeStyle = RopeStyle.RotateHalf,
            TiedEmbeddings = json.Bool("tie_word_embeddings") ?? false,
            AttentionBias = attentionBias,
            QkNorm = architecture == "qwen3",
            SlidingWindow = SlidingWindow(json, architecture, layers),
            BosTokenId = json.Int("bos_token_id") ?? 1,
            EosTokenId = EosTokenId(json) ?? 2,
        };
        return WithLayerShapes(json, config);
    }

    /// <summary>Key of LlmShrink's per-layer widths in config.json (see docs/FORMAT.md).</summary>
    public const string LayerShapesKey = "layer_shapes";

    /// <summary>
    /// Per-layer widths of a structurally pruned model: <c>"layer_shapes": {"num_attention_heads": [...],
    /// "num_key_value_heads": [...], "intermediate_size": [...]}</c>, one entry per layer; a list left out means the
    /// scalar key's value for every layer. The scalar keys hold the largest widths, so transformers, which does not know
    /// the key, sees an ordinary config (and cannot load the smaller tensors).
    /// </summary>
    private static ModelConfig WithLayerShapes(Keys json, ModelConfig config)
    {
        var shapes = json.Object(LayerShapesKey);
        int layers = config.NumLayers;
        if (shapes is null || layers <= 0) return config;
        int[]? heads = shapes.IntList("num_attention_heads", layers, "num_hidden_layers");
        int[]? kvHeads = shapes.IntList("num_key_value_heads", layers, "num_hidden_layers");
        int[]? ffn = shapes.IntList("intermediate_size", layers, "num_hidden_layers");
        if (heads is null && kvHeads is null && ffn is null) return config;
        return config.WithLayerShapes(Enumerable.Range(0, layers).Select(l => new LayerShape(
            heads?[l] ?? config.NumHeads, kvHeads?[l] ?? config.NumKvHeads, ffn?[l] ?? config.IntermediateSize)).ToArray());
    }

    /// <summary>
    /// rope_theta and the optional rope_scaling object; transformers 5 moves both into "rope_parameters".
    /// Only Llama 3's scaling is implemented: linear, dynamic NTK, YaRN and LongRoPE change the frequencies
    /// differently, and ignoring them would produce plausible but wrong text.
    /// </summary>
    private static (float Theta, Llama3RopeScaling? Scaling) Rope(Keys json)
    {
        var scaling = json.Object("rope_scaling") ?? json.Object("rope_parameters");
        float theta = json.Float("rope_theta") ?? scaling?.Float("rope_theta") ?? 10000f;
        if (scaling is null) return (theta, null);
        string type = scaling.String("rope_type") ?? scaling.String("type") ?? throw json.Error("rope_scaling has no 'rope_type'");
        switch (type)
        {
            case "default":
                return (theta, null);
            case "llama3":
                return (theta, new Llama3RopeScaling(
                    scaling.RequiredFloat("factor"), scaling.RequiredFloat("low_freq_factor"), scaling.RequiredFloat("high_freq_factor"),
                    scaling.RequiredInt("original_max_position_embeddings")));
            default:
                throw json.Error($"rope_scaling type '{type}' is not supported (supported: llama3)");
        }
    }

    /// <summary>
    /// Mistral applies its window to every layer (absent key = MistralConfig's 4096, null = none). Qwen2/Qwen3
    /// use it only when use_sliding_window is set, and then only from layer max_window_layers on; a mix of
    /// windowed and full layers cannot be expressed by one <see cref="ModelConfig.SlidingWindow"/>.
    /// </summary>
    private static int? SlidingWindow(Keys json, string architecture, int layers)
    {
        switch (architecture)
        {
            case "mistral":
                return json.Has("sliding_window") ? json.Int("sliding_window") : 4096;
            case "qwen2" or "qwen3":
                if (json.Bool("use_sliding_window") != true) return null;
                int window = json.RequiredInt("sliding_window");
                int firstWindowed = json.Int("max_window_layers") ?? 28;
                if (firstWindowed >= layers) return null;
                if (firstWindowed <= 0) return window;
                throw json.Error($"sliding window on layers {firstWindowed}..{layers - 1} only (max_window_layers) is not supported");
            default:
                return null;
        }
    }

    /// <summary>eos_token_id may be one id or a list (Llama 3 instruct); the first is the primary one.</summary>
    private static int? EosTokenId(Keys json)
    {
        var list = json.Array("eos_token_id");
        if (list is null) return json.Int("eos_token_id");
        foreach (var item in list.Value.EnumerateArray())
            return item.TryGetInt32(out int id) ? id : throw json.Error("'eos_token_id' must contain integers");
        return null;
    }

    /// <summary>Typed access to one JSON object's keys; a present key of the wrong type is an error naming the file.</summary>
    private sealed class Keys(JsonElement element, string path, string prefix)
    {
        public ShrinkException Error(string problem) => ShrinkException.InFile(path, problem);

        public bool Has(string key) => element.TryGetProperty(key, out _);

        /// <summary>The value, or null when the key is absent or JSON null.</summary>
        private JsonElement? Value(string key) =>
            element.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

        private ShrinkException WrongType(string key, string expected) => Error($"'{prefix}{key}' must be {expected}");

        public string? String(string key) => Value(key) is { } v
            ? (v.ValueKind == JsonValueKind.String ? v.GetString() : throw WrongType(key, "a string")) : null;

        public int? Int(string key) => Value(key) is { } v
            ? (v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i : throw WrongType(key, "an integer")) : null;

        public float? Float(string key) => Value(key) is { } v
            ? (v.ValueKind == JsonValueKind.Number ? (float)v.GetDouble() : throw WrongType(key, "a number")) : null;

        public bool? Bool(string key) => Value(key) is { } v
            ? (v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : throw WrongType(key, "true or false")) : null;

        public Keys? Object(string key) => Value(key) is { } v
            ? (v.ValueKind == JsonValueKind.Object ? new Keys(v, path, $"{prefix}{key}.") : throw WrongType(key, "an object")) : null;

        public JsonElement? Array(string key) => Value(key) is { ValueKind: JsonValueKind.Array } v ? v : null;

        /// <summary>A list of exactly <paramref name="count"/> integers (one per <paramref name="countKey"/>), or null when absent.</summary>
        public int[]? IntList(string key, int count, string countKey)
        {
            if (Value(key) is not { } v) return null;
            if (v.ValueKind != JsonValueKind.Array) throw WrongType(key, "a list of integers");
            var values = new List<int>();
            foreach (var item in v.EnumerateArray())
                values.Add(item.ValueKind == JsonValueKind.Number && item.TryGetInt32(out int i) ? i : throw WrongType(key, "a list of integers"));
            if (values.Count != count) throw Error($"'{prefix}{key}' has {values.Count} entries for {count} layers ({countKey})");
            return [.. values];
        }

        public int RequiredInt(string key) => Int(key) ?? throw Error($"missing '{prefix}{key}'");
        public float RequiredFloat(string key) => Float(key) ?? throw Error($"missing '{prefix}{key}'");
    }
}
