using System.Runtime.InteropServices;
using System.Text.Json;
using LlmShrink.Formats;
using LlmShrink.Formats.Safetensors;

namespace LlmShrink.Model.Synthesis;

/// <summary>
/// Writes a Hugging Face model folder (config.json + model.safetensors) with the exact shape of a real model and
/// random weights — for benchmarking memory bandwidth and compression speed at real sizes without downloading
/// gigabytes. Linear and embedding weights are N(0, 0.02²) (the usual Llama initialisation); norm weights are 1.
/// Every tensor is generated while it is written, one block at a time, so a 7B model never sits in memory.
/// </summary>
public static class RandomModel
{
    public const float WeightStd = 0.02f;
    /// <summary>Elements generated per block written to the stream.</summary>
    private const int BlockElements = 1 << 16;

    public static IReadOnlyList<string> ShapeNames { get; } = ["llama-3.2-1b", "llama-2-7b", "tinylit"];

    /// <summary>The published hyper-parameters of the named model (its config.json on the Hugging Face hub).</summary>
    public static ModelConfig Shape(string name) => name switch
    {
        "llama-3.2-1b" => new ModelConfig
        {
            Architecture = "llama", HiddenSize = 2048, IntermediateSize = 8192, NumLayers = 16, NumHeads = 32, NumKvHeads = 8,
            HeadDim = 64, VocabSize = 128256, MaxPositions = 131072, RmsNormEps = 1e-5f, RopeTheta = 500000f,
            RopeScaling = new Llama3RopeScaling(32f, 1f, 4f, 8192), TiedEmbeddings = true, BosTokenId = 128000, EosTokenId = 128001,
        },
        "llama-2-7b" => new ModelConfig
        {
            Architecture = "llama", HiddenSize = 4096, IntermediateSize = 11008, NumLayers = 32, NumHeads = 32, NumKvHeads = 32,
            HeadDim = 128, VocabSize = 32000, MaxPositions = 4096, RmsNormEps = 1e-5f, RopeTheta = 10000f, TiedEmbeddings = false,
        },
        "tinylit" => new ModelConfig
        {
            Architecture = "llama", HiddenSize = 256, IntermediateSize = 768, NumLayers = 8, NumHeads = 8, NumKvHeads = 4,
            HeadDim = 32, VocabSize = 4096, MaxPositions = 2048, RmsNormEps = 1e-5f, RopeTheta = 10000f, TiedEmbeddings = false,
        },
        _ => throw new ShrinkException($"--shape: unknown shape '{name}' (known: {string.Join(", ", ShapeNames)})"),
    };

    /// <summary>
    /// <paramref name="config"/> with <paramref name="vocabulary"/> tokens; BOS and EOS move to SentencePiece's ids 1 and 2 when
    /// the shape's own ids would fall outside it.
    /// </summary>
    public static ModelConfig WithVocabulary(ModelConfig config, int vocabulary)
    {
        if (vocabulary < 3) throw new ShrinkException($"--vocab: {vocabulary} is too small (at least 3: unknown, BOS, EOS)");
        bool idsFit = config.BosTokenId < vocabulary && config.EosTokenId < vocabulary;
        return config with
        {
            VocabSize = vocabulary,
            BosTokenId = idsFit ? config.BosTokenId : 1,
            EosTokenId = idsFit ? config.EosTokenId : 2,
        };
    }

    /// <summary>Name, shape ([out, in] for linear layers) and whether it is a norm (filled with ones) of every tensor.</summary>
    public static IReadOnlyList<(string Name, long[] Shape, bool IsNorm)> Tensors(ModelConfig c)
    {
        var list = new List<(string, long[], bool)> { (TensorNames.Embedding, [c.VocabSize, c.HiddenSize], false) };
        for (int i = 0; i < c.NumLayers; i++)
        {
            list.Add((TensorNames.Layer(i, TensorNames.AttnNorm), [c.HiddenSize], true));
            list.Add((TensorNames.Layer(i, TensorNames.Q), [c.QDim, c.HiddenSize], false));
            list.Add((TensorNames.Layer(i, TensorNames.K), [c.KvDim, c.HiddenSize], false));
            list.Add((TensorNames.Layer(i, TensorNames.V), [c.KvDim, c.HiddenSize], false));
            list.Add((TensorNames.Layer(i, TensorNames.O), [c.HiddenSize, c.QDim], false));
            list.Add((TensorNames.Layer(i, TensorNames.FfnNorm), [c.HiddenSize], true));
            list.Add((TensorNames.Layer(i, TensorNames.Gate), [c.IntermediateSize, c.HiddenSize], false));
            list.Add((TensorNames.Layer(i, TensorNames.Up), [c.IntermediateSize, c.HiddenSize], false));
            list.Add((TensorNames.Layer(i, TensorNames.Down), [c.HiddenSize, c.IntermediateSize], false));
        }
        list.Add((TensorNames.FinalNorm, [c.HiddenSize], true));
        if (!c.TiedEmbeddings) list.Add((TensorNames.LmHead, [c.VocabSize, c.HiddenSize], false));
        return list;
    }

    /// <summary>
    /// Writes <c>model.safetensors</c> then <c>config.json</c> into <paramref name="folder"/> (created if needed).
    /// <paramref name="bytesWritten"/> reports progress in tensor bytes.
    /// </summary>
    public static void Write(string folder, ModelConfig config, TensorType dtype, ulong seed,
        Action<long>? bytesWritten = null, CancellationToken cancellation = default)
    {
        if (dtype is not (TensorType.F32 or TensorType.F16 or TensorType.BF16))
            throw new ShrinkException($"--dtype: {dtype} is not supported for random models (use F32, F16 or BF16)");
        Directory.CreateDirectory(folder);

        long written = 0;
        var tensors = Tensors(config);
        var entries = new List<SafetensorsWriter.Entry>(tensors.Count);
        for (int t = 0; t < tensors.Count; t++)
        {
            var (name, shape, isNorm) = tensors[t];
            long elements = shape.Aggregate(1L, (a, b) => a * b);
            long index = t;
            entries.Add(new SafetensorsWriter.Entry(name, dtype, shape, stream =>
            {
                var generator = GaussianGenerator.ForItem(seed, index);
                var values = new float[BlockElements];
                var bytes = new byte[BlockElements * 4];
                if (isNorm) values.AsSpan().Fill(1f);
                for (long done = 0; done < elements; done += BlockElements)
                {
                    cancellation.ThrowIfCancellationRequested();
                    int n = (int)Math.Min(BlockElements, elements - done);
                    if (!isNorm) generator.FillNormal(values.AsSpan(0, n), WeightStd);
                    int count = Encode(values.AsSpan(0, n), dtype, bytes);
                    stream.Write(bytes, 0, count);
                    written += count;
                    bytesWritten?.Invoke(written);
                }
            }));
        }

        string dtypeName = dtype switch { TensorType.F32 => "float32", TensorType.F16 => "float16", _ => "bfloat16" };
        SafetensorsWriter.Write(Path.Combine(folder, "model.safetensors"), entries, new Dictionary<string, string> { ["format"] = "pt" });
        WriteConfigJson(Path.Combine(folder, "config.json"), config, dtypeName);
    }

    /// <summary>Total bytes of tensor data the model will have in <paramref name="dtype"/>.</summary>
    public static long TensorBytes(ModelConfig config, TensorType dtype) =>
        Tensors(config).Sum(t => TensorTypes.ByteCount(dtype, t.Shape.Aggregate(1L, (a, b) => a * b)));

    private static int Encode(ReadOnlySpan<float> values, TensorType dtype, Span<byte> destination)
    {
        switch (dtype)
        {
            case TensorType.F32:
                MemoryMarshal.AsBytes(values).CopyTo(destination);
                return values.Length * 4;
            case TensorType.F16:
                System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(values, MemoryMarshal.Cast<byte, Half>(destination)[..values.Length]);
                return values.Length * 2;
            default:
                var bf16 = MemoryMarshal.Cast<byte, ushort>(destination);
                for (int i = 0; i < values.Length; i++) bf16[i] = ToBFloat16(values[i]);
                return values.Length * 2;
        }
    }

    /// <summary>The top 16 bits of the float, rounded to nearest even (the values here are finite).</summary>
    private static ushort ToBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        uint roundingBias = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + roundingBias) >> 16);
    }

    /// <summary>config.json in the transformers LlamaConfig layout, written to a temporary file then renamed.</summary>
    private static void WriteConfigJson(string path, ModelConfig c, string dtypeName)
    {
        string temporary = path + ".tmp";
        using (var stream = File.Create(temporary))
        using (var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteStartArray("architectures"); json.WriteStringValue("LlamaForCausalLM"); json.WriteEndArray();
            json.WriteString("model_type", "llama");
            json.WriteNumber("hidden_size", c.HiddenSize);
            json.WriteNumber("intermediate_size", c.IntermediateSize);
            json.WriteNumber("num_hidden_layers", c.NumLayers);
            json.WriteNumber("num_attention_heads", c.NumHeads);
            json.WriteNumber("num_key_value_heads", c.NumKvHeads);
            json.WriteNumber("head_dim", c.HeadDim);
            json.WriteNumber("vocab_size", c.VocabSize);
            json.WriteNumber("max_position_embeddings", c.MaxPositions);
            json.WriteNumber("rms_norm_eps", (double)(decimal)c.RmsNormEps);
            json.WriteNumber("rope_theta", (double)c.RopeTheta);
            if (c.RopeScaling is { } s)
            {
                json.WriteStartObject("rope_scaling");
                json.WriteString("rope_type", "llama3");
                json.WriteNumber("factor", (double)s.Factor);
                json.WriteNumber("low_freq_factor", (double)s.LowFreqFactor);
                json.WriteNumber("high_freq_factor", (double)s.HighFreqFactor);
                json.WriteNumber("original_max_position_embeddings", s.OriginalMaxPositions);
                json.WriteEndObject();
            }
            json.WriteBoolean("tie_word_embeddings", c.TiedEmbeddings);
            json.WriteString("hidden_act", "silu");
            json.WriteBoolean("attention_bias", false);
            json.WriteBoolean("mlp_bias", false);
            json.WriteNumber("bos_token_id", c.BosTokenId);
            json.WriteNumber("eos_token_id", c.EosTokenId);
            json.WriteString("torch_dtype", dtypeName);
            json.WriteEndObject();
        }
        File.Move(temporary, path, overwrite: true);
    }
}
