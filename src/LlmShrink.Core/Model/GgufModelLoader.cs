using LlmShrink.Formats;
using LlmShrink.Formats.Gguf;
using LlmShrink.Tokenization;

namespace LlmShrink.Model;

/// <summary>
/// Opens a GGUF file as a model: config from its <c>{arch}.*</c> metadata, tensors renamed from llama.cpp's names
/// (<c>blk.N.attn_q.weight</c>) to canonical Hugging Face ones, and the tokenizer it embeds (<c>tokenizer.ggml.*</c>).
/// </summary>
public static class GgufModelLoader
{
    public static LoadedModel Load(string path)
    {
        var gguf = GgufFile.Open(path);
        try
        {
            var config = ReadConfig(gguf);
            var weights = MapTensors(gguf, config);
            var vocabulary = ReadVocabulary(gguf);
            return new LoadedModel
            {
                Source = path,
                Format = "gguf",
                Config = config,
                Weights = weights,
                Tokenizer = vocabulary is null ? null : TokenizerFactory.FromGguf(vocabulary, path),
            };
        }
        catch
        {
            gguf.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Model hyper-parameters from the metadata. llama.cpp's converter permuted the Q/K rows of llama models so that
    /// rotating adjacent pairs computes what Hugging Face's rotate-half computes on the original rows; qwen2/qwen3
    /// are converted unpermuted and keep rotate-half. "deci" is llama.cpp's Llama whose blocks differ in width
    /// (Nemotron-51B; LlmShrink's per-block exports): the same blocks, read as llama.
    /// </summary>
    internal static ModelConfig ReadConfig(GgufFile gguf)
    {
        var meta = gguf.Metadata;
        string arch = meta.GetString("general.architecture");
        var (architecture, ropeStyle) = arch switch
        {
            "llama" or "deci" => ("llama", RopeStyle.Interleaved),
            "qwen2" or "qwen3" => (arch, RopeStyle.RotateHalf),
            _ => throw ShrinkException.InFile(gguf.Path, $"unsupported architecture '{GgufReader.Printable(arch)}' (supported: llama, mistral as llama, deci, qwen2, qwen3)"),
        };

        int hidden = meta.GetInt32($"{arch}.embedding_length");
        int layers = meta.GetInt32($"{arch}.block_count");
        if (layers <= 0) throw ShrinkException.InFile(gguf.Path, $"{arch}.block_count = {layers} must be positive");
        int[] heads = PerLayer(gguf, $"{arch}.attention.head_count", layers);
        int[] kvHeads = meta.Contains($"{arch}.attention.head_count_kv") ? PerLayer(gguf, $"{arch}.attention.head_count_kv", layers) : heads;
        int[] ffn = PerLayer(gguf, $"{arch}.feed_forward_length", layers);
        // As in llama.cpp, an unstated head size is the hidden size over the first block's heads.
        int headDim = meta.TryGetInt32($"{arch}.attention.key_length", out int keyLength) ? keyLength
            : heads[0] > 0 ? hidden / heads[0] : 0;
        if (meta.TryGetInt32($"{arch}.rope.dimension_count", out int ropeDims) && ropeDims != headDim)
            throw ShrinkException.InFile(gguf.Path, $"{arch}.rope.dimension_count = {ropeDims} but the head dimension is {headDim}; partial rotary embeddings are not supported");

        // Llama 3.1's frequency scaling arrives as the rope_freqs tensor; the older whole-range schemes would silently change the function.
        if (meta.TryGetString($"{arch}.rope.scaling.type", out string scaling) && scaling != "none")
            throw ShrinkException.InFile(gguf.Path, $"RoPE scaling '{GgufReader.Printable(scaling)}' is not supported");
        int contextLength = meta.GetInt32($"{arch}.context_length");
        if (contextLength <= 0) throw ShrinkException.InFile(gguf.Path, $"{arch}.context_length = {contextLength} must be positive");

        var config = new ModelConfig
        {
            Architecture = architecture,
            HiddenSize = hidden,
            IntermediateSize = ffn[0],
            NumLayers = layers,
            NumHeads = heads[0],
            NumKvHeads = kvHeads[0],
            HeadDim = headDim,
            VocabSize = ReadVocabSize(gguf),
            MaxPositions = contextLength,
            RmsNormEps = meta.GetFloat($"{arch}.attention.layer_norm_rms_epsilon"),
            RopeTheta = meta.TryGetFloat($"{arch}.rope.freq_base", out float theta) ? theta : 10000f,
            RopeStyle = ropeStyle,
            TiedEmbeddings = gguf.FindTensor("output.weight") is null,
            AttentionBias = gguf.FindTensor("blk.0.attn_q.bias") is not null,
            QkNorm = gguf.FindTensor("blk.0.attn_q_norm.weight") is not null,
            BosTokenId = meta.TryGetInt32("tokenizer.ggml.bos_token_id", out int bos) ? bos : 1,
            EosTokenId = meta.TryGetInt32("tokenizer.ggml.eos_token_id", out int eos) ? eos : 2,
        };
        if (heads.Length > 1 || kvHeads.Length > 1 || ffn.Length > 1)
        {
            static int At(int[] values, int layer) => values[values.Length == 1 ? 0 : layer];
            config = config.WithLayerShapes(Enumerable.Range(0, layers).Select(l => new LayerShape(At(heads, l), At(kvHeads, l), At(ffn, l))).ToArray());
        }
        config.Validate(gguf.Path);
        return config;
    }

    /// <summary>
    /// A block width that, as llama.cpp's loader accepts (get_key_or_arr), is one number for every block or an array of
    /// one per block: a one-element array for the former, <paramref name="layers"/> elements for the latter.
    /// </summary>
    private static int[] PerLayer(GgufFile gguf, string key, int layers)
    {
        if (!gguf.Metadata.Get(key).IsArray) return [gguf.Metadata.GetInt32(key)];
        int[] values = gguf.Metadata.GetInt32Array(key);
        if (values.Length != layers) throw ShrinkException.InFile(gguf.Path, $"{key} has {values.Length} entries for {layers} blocks");
        return values;
    }

    /// <summary>The tokenizer's token count, or without a tokenizer the rows of the embedding matrix.</summary>
    private static int ReadVocabSize(GgufFile gguf)
    {
        var tokens = gguf.Metadata.Find("tokenizer.ggml.tokens");
        if (tokens is not null) return tokens.Count;
        var embedding = gguf.FindTensor("token_embd.weight")
            ?? throw ShrinkException.InFile(gguf.Path, "missing tensor 'token_embd.weight'");
        return embedding.Shape.Length == 2 && embedding.Shape[0] <= int.MaxValue ? (int)embedding.Shape[0]
            : throw ShrinkException.InFile(gguf.Path, $"tensor 'token_embd.weight' has shape [{string.Join(", ", embedding.Shape)}], expected [vocab, hidden]");
    }

    /// <summary>
    /// Every tensor the config calls for, under its canonical name, each checked for presence and shape; a tensor in
    /// the file that the model would not use is an error too (as in llama.cpp), since ignoring it could silently
    /// compute a different function. The returned set owns the file's mapping.
    /// </summary>
    internal static TensorSet MapTensors(GgufFile gguf, ModelConfig c)
    {
        var expected = new List<(string GgufName, string CanonicalName, long[] Shape)>
        {
            ("token_embd.weight", TensorNames.Embedding, [c.VocabSize, c.HiddenSize]),
            ("output_norm.weight", TensorNames.FinalNorm, [c.HiddenSize]),
        };
        if (!c.TiedEmbeddings) expected.Add(("output.weight", TensorNames.LmHead, [c.VocabSize, c.HiddenSize]));
        if (gguf.FindTensor("rope_freqs.weight") is not null)
            expected.Add(("rope_freqs.weight", TensorNames.RopeFrequencyFactors, [c.HeadDim / 2]));

        for (int i = 0; i < c.NumLayers; i++)
        {
            int q = c.QDimOf(i), kv = c.KvDimOf(i), ffn = c.Layer(i).IntermediateSize;
            void Layer(string ggufSuffix, string canonicalSuffix, params long[] shape) =>
                expected.Add(($"blk.{i}.{ggufSuffix}", TensorNames.Layer(i, canonicalSuffix), shape));

            Layer("attn_norm.weight", TensorNames.AttnNorm, c.HiddenSize);
            Layer("attn_q.weight", TensorNames.Q, q, c.HiddenSize);
            Layer("attn_k.weight", TensorNames.K, kv, c.HiddenSize);
            Layer("attn_v.weight", TensorNames.V, kv, c.HiddenSize);
            Layer("attn_output.weight", TensorNames.O, c.HiddenSize, q);
            if (c.AttentionBias)
            {
                Layer("attn_q.bias", TensorNames.QBias, q);
                Layer("attn_k.bias", TensorNames.KBias, kv);
                Layer("attn_v.bias", TensorNames.VBias, kv);
            }
            if (c.QkNorm)
            {
                Layer("attn_q_norm.weight", TensorNames.QNorm, c.HeadDim);
                Layer("attn_k_norm.weight", TensorNames.KNorm, c.HeadDim);
            }
            Layer("ffn_norm.weight", TensorNames.FfnNorm, c.HiddenSize);
            Layer("ffn_gate.weight", TensorNames.Gate, ffn, c.HiddenSize);
            Layer("ffn_up.weight", TensorNames.Up, ffn, c.HiddenSize);
            Layer("ffn_down.weight", TensorNames.Down, c.HiddenSize, ffn);
        }

        var weights = new TensorSet();
        foreach (var (ggufName, canonicalName, shape) in expected)
        {
            var tensor = gguf.FindTensor(ggufName) ?? throw ShrinkException.InFile(gguf.Path, $"missing tensor '{ggufName}'");
            if (!tensor.Shape.AsSpan().SequenceEqual(shape))
                throw ShrinkException.InFile(gguf.Path, $"tensor '{ggufName}' has shape [{string.Join(", ", tensor.Shape)}], expected [{string.Join(", ", shape)}]");
            weights.Add(canonicalName, tensor);
        }
        if (weights.Count != gguf.Tensors.Count)
        {
            var used = expected.Select(e => e.GgufName).ToHashSet(StringComparer.Ordinal);
            var extra = gguf.Tensors.First(t => !used.Contains(t.Name));
            throw ShrinkException.InFile(gguf.Path, $"unexpected tensor '{GgufReader.Printable(extra.Name)}' for a {c.Architecture} model with this configuration");
        }
        weights.AddFile(gguf.File);
        return weights;
    }

    /// <summary>The embedded tokenizer's vocabulary, or null when the file carries none (no <c>tokenizer.ggml.tokens</c>).</summary>
    internal static GgufVocabulary? ReadVocabulary(GgufFile gguf)
    {
        var meta = gguf.Metadata;
        if (!meta.TryGetStringArray("tokenizer.ggml.tokens", out var tokens)) return null;
        string model = meta.GetString("tokenizer.ggml.model");

        float[]? scores = meta.TryGetFloatArray("tokenizer.ggml.scores", out var s) ? s : null;
        int[]? tokenTypes = meta.TryGetInt32Array("tokenizer.ggml.token_type", out var t) ? t : null;
        string[]? merges = meta.TryGetStringArray("tokenizer.ggml.merges", out var m) ? m : null;
        if (scores is not null && scores.Length != tokens.Length)
            throw ShrinkException.InFile(gguf.Path, $"tokenizer.ggml.scores has {scores.Length} entries for {tokens.Length} tokens");
        if (tokenTypes is not null && tokenTypes.Length != tokens.Length)
            throw ShrinkException.InFile(gguf.Path, $"tokenizer.ggml.token_type has {tokenTypes.Length} entries for {tokens.Length} tokens");

        int TokenId(string key, int fallback)
        {
            int id = meta.TryGetInt32(key, out int v) ? v : fallback;
            if ((uint)id >= (uint)tokens.Length)
                throw ShrinkException.InFile(gguf.Path, $"{key} = {id} is not a token id (the vocabulary has {tokens.Length} tokens)");
            return id;
        }

        // SentencePiece ("llama") vocabularies expect BOS and a leading space by default; byte-level BPE ("gpt2") neither.
        bool sentencePiece = model == "llama";
        return new GgufVocabulary(
            Model: model,
            Tokens: tokens,
            Scores: scores,
            TokenTypes: tokenTypes,
            Merges: merges,
            BosId: TokenId("tokenizer.ggml.bos_token_id", 1),
            EosId: TokenId("tokenizer.ggml.eos_token_id", 2),
            UnknownId: meta.Contains("tokenizer.ggml.unknown_token_id") ? TokenId("tokenizer.ggml.unknown_token_id", 0) : null,
            AddBos: meta.TryGetBool("tokenizer.ggml.add_bos_token", out bool addBos) ? addBos : sentencePiece,
            AddSpacePrefix: meta.TryGetBool("tokenizer.ggml.add_space_prefix", out bool addSpace) ? addSpace : sentencePiece,
            Pre: meta.TryGetString("tokenizer.ggml.pre", out var pre) ? pre : null);
    }
}
