using System.Runtime.InteropServices;
using LlmShrink.Formats;
using LlmShrink.Model;

namespace LlmShrink.Tests;

/// <summary>
/// Tiny random Llama-family models for tests: weights written to a raw binary file, memory-mapped, and exposed as
/// StoredTensors under canonical names — exactly how a real loader presents a checkpoint.
/// </summary>
public static class SyntheticModel
{
    public static ModelConfig Config(string architecture = "llama") => new()
    {
        Architecture = architecture,
        HiddenSize = 48,
        IntermediateSize = 72,
        NumLayers = 2,
        NumHeads = 6,
        NumKvHeads = 2,
        HeadDim = 8,
        VocabSize = 67,
        RmsNormEps = 1e-5f,
        RopeTheta = 10000f,
    };

    /// <summary>Random weights (shape, values) under canonical names; linear weights scaled like a trained model's.</summary>
    public static Dictionary<string, (long[] Shape, float[] Data)> RandomWeights(ModelConfig c, int seed, bool ropeFactors = false)
    {
        var random = new Random(seed);
        var weights = new Dictionary<string, (long[], float[])>();
        void Add(string name, float center, float spread, params long[] shape)
        {
            var data = new float[shape.Aggregate(1L, (a, b) => a * b)];
            for (int i = 0; i < data.Length; i++) data[i] = center + spread * (2 * random.NextSingle() - 1);
            weights[name] = (shape, data);
        }
        void Matrix(string name, int rows, int cols) => Add(name, 0, 1.7f / MathF.Sqrt(cols), rows, cols);

        Add(TensorNames.Embedding, 0, 1, c.VocabSize, c.HiddenSize);
        Add(TensorNames.FinalNorm, 1, 0.3f, c.HiddenSize);
        if (!c.TiedEmbeddings) Matrix(TensorNames.LmHead, c.VocabSize, c.HiddenSize);
        if (ropeFactors) Add(TensorNames.RopeFrequencyFactors, 2.5f, 1.5f, c.HeadDim / 2);
        for (int l = 0; l < c.NumLayers; l++)
        {
            string L(string suffix) => TensorNames.Layer(l, suffix);
            int q = c.QDimOf(l), kv = c.KvDimOf(l), ffn = c.Layer(l).IntermediateSize;
            Add(L(TensorNames.AttnNorm), 1, 0.3f, c.HiddenSize);
            Add(L(TensorNames.FfnNorm), 1, 0.3f, c.HiddenSize);
            Matrix(L(TensorNames.Q), q, c.HiddenSize);
            Matrix(L(TensorNames.K), kv, c.HiddenSize);
            Matrix(L(TensorNames.V), kv, c.HiddenSize);
            Matrix(L(TensorNames.O), c.HiddenSize, q);
            Matrix(L(TensorNames.Gate), ffn, c.HiddenSize);
            Matrix(L(TensorNames.Up), ffn, c.HiddenSize);
            Matrix(L(TensorNames.Down), c.HiddenSize, ffn);
            if (c.AttentionBias)
            {
                Add(L(TensorNames.QBias), 0, 0.5f, q);
                Add(L(TensorNames.KBias), 0, 0.5f, kv);
                Add(L(TensorNames.VBias), 0, 0.5f, kv);
            }
            if (c.QkNorm)
            {
                Add(L(TensorNames.QNorm), 1, 0.3f, c.HeadDim);
                Add(L(TensorNames.KNorm), 1, 0.3f, c.HeadDim);
            }
        }
        return weights;
    }

    /// <summary>Writes the weights (every tensor in <paramref name="type"/>: F32, F16 or BF16) to <paramref name="path"/> and maps them.</summary>
    public static LoadedModel Write(string path, ModelConfig config, Dictionary<string, (long[] Shape, float[] Data)> weights,
        TensorType type = TensorType.F32)
    {
        var offsets = new List<(string Name, long[] Shape, long Offset)>();
        using (var file = new FileStream(path, FileMode.Create, FileAccess.Write))
        {
            foreach (var (name, (shape, data)) in weights)
            {
                offsets.Add((name, shape, file.Position));
                file.Write(Encode(data, type));
                while (file.Position % 64 != 0) file.WriteByte(0); // keep tensors aligned like a real checkpoint
            }
        }
        var mapped = new MappedFile(path);
        var set = new TensorSet();
        set.AddFile(mapped);
        foreach (var (name, shape, offset) in offsets) set.Add(new StoredTensor(name, shape, type, mapped, offset));
        return new LoadedModel { Source = path, Format = "synthetic", Config = config, Weights = set, Tokenizer = null };
    }

    public static LoadedModel Build(string path, ModelConfig config, int seed = 1, TensorType type = TensorType.F32, bool ropeFactors = false) =>
        Write(path, config, RandomWeights(config, seed, ropeFactors), type);

    private static byte[] Encode(float[] data, TensorType type) => type switch
    {
        TensorType.F32 => MemoryMarshal.AsBytes(data.AsSpan()).ToArray(),
        TensorType.F16 => MemoryMarshal.AsBytes(data.Select(v => (Half)v).ToArray().AsSpan()).ToArray(),
        TensorType.BF16 => MemoryMarshal.AsBytes(data.Select(ToBFloat16).ToArray().AsSpan()).ToArray(),
        _ => throw new ArgumentException($"synthetic models are stored as F32, F16 or BF16, not {type}"),
    };

    /// <summary>Round to nearest even on the top 16 bits of the float32.</summary>
    private static ushort ToBFloat16(float v)
    {
        uint bits = (uint)BitConverter.SingleToInt32Bits(v);
        return (ushort)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
    }
}
