using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using System.Text.Json.Nodes;
using LlmShrink.Formats;
using LlmShrink.Formats.Safetensors;

namespace LlmShrink.Tests;

/// <summary>
/// Reads a compressed-tensors folder as the library's decompressors do (compressed_tensors 0.18: compressors/pack_quantized
/// unpack_from_int32, naive_quantized, quantization/lifecycle/forward.py dequantize), written from
/// that public description and sharing no code with the exporter: config.json's <c>quantization_config</c> decides each
/// module's scheme (a target is a full module name or <c>re:</c> regex), its tensors give the weight.
/// </summary>
internal sealed class CompressedTensorsDecoder : IDisposable
{
    private readonly List<SafetensorsFile> _files = new();
    public Dictionary<string, StoredTensor> Tensors { get; } = new(StringComparer.Ordinal);
    public JsonObject Quantization { get; }

    public CompressedTensorsDecoder(string folder)
    {
        Quantization = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "config.json")))!["quantization_config"]!.AsObject();
        foreach (string path in Directory.GetFiles(folder, "model*.safetensors"))
        {
            var file = SafetensorsFile.Open(path);
            _files.Add(file);
            foreach (var t in file.Tensors) Tensors.Add(t.Name, t);
        }
    }

    /// <summary>The config group targeting <paramref name="module"/>, or null (the module is then dense).</summary>
    public JsonObject? Scheme(string module)
    {
        var matches = Quantization["config_groups"]!.AsObject().Select(g => g.Value!.AsObject())
            .Where(g => g["targets"]!.AsArray().Any(t => Targets(t!.GetValue<string>(), module))).ToList();
        if (matches.Count > 1) throw new InvalidOperationException($"{module} is targeted by {matches.Count} config groups");
        return matches.SingleOrDefault();
    }

    private static bool Targets(string target, string module) =>
        target.StartsWith("re:", StringComparison.Ordinal) ? Regex.IsMatch(module, "^(?:" + target[3..] + ")$") : target == module;

    public bool Ignored(string module) => Quantization["ignore"]!.AsArray().Any(i => i!.GetValue<string>() == module);

    /// <summary>The weight [out, in] of a linear module as a float32 row-major array.</summary>
    public float[] Weight(string module)
    {
        if (Scheme(module) is not { } scheme) return Tensors[module + ".weight"].ToFloatArray();
        var args = scheme["weights"]!.AsObject();
        string format = scheme["format"]?.GetValue<string>() ?? Quantization["format"]!.GetValue<string>();
        return format switch
        {
            "int-quantized" => Int8(module),
            "pack-quantized" => Packed(module, args),
            _ => throw new InvalidOperationException($"{module}: format {format}"),
        };
    }

    /// <summary>naive/int-quantized: int8 q [out, in] with one scale per row: w = scale · q.</summary>
    private float[] Int8(string module)
    {
        var weight = Tensors[module + ".weight"];
        if (weight.Type != TensorType.I8) throw new InvalidOperationException($"{weight.Name} is {weight.Type}");
        var q = MemoryMarshal.Cast<byte, sbyte>(weight.Bytes());
        var scale = Tensors[module + ".weight_scale"].ToFloatArray();
        int columns = (int)weight.Shape[1];
        var w = new float[q.Length];
        for (int i = 0; i < w.Length; i++) w[i] = scale[i / columns] * q[i];
        return w;
    }

    /// <summary>
    /// pack-quantized: values stored as q + 2^(bits−1) in a dense bit stream of int32 words, value i at global bits
    /// [i·bits, (i+1)·bits) (straddling a word boundary when it must); weights streamed along dim 1 (inputs), zero points
    /// along dim 0 (outputs, one stream per group column); w = scale[r, g] · (q − zp[r, g]) with g the column's group:
    /// g_idx[c] when given, else c / group_size (0 for strategy channel).
    /// </summary>
    private float[] Packed(string module, JsonObject args)
    {
        int bits = args["num_bits"]!.GetValue<int>();
        int offset = 1 << (bits - 1);
        var shape = MemoryMarshal.Cast<byte, long>(Tensors[module + ".weight_shape"].Bytes());
        int rows = (int)shape[0], columns = (int)shape[1];
        var packedTensor = Tensors[module + ".weight_packed"];
        int wordsPerRow = (int)packedTensor.Shape[1];
        if (wordsPerRow != (columns * bits + 31) / 32) throw new InvalidOperationException($"{module}.weight_packed has {wordsPerRow} words per row");
        var packed = MemoryMarshal.Cast<byte, int>(packedTensor.Bytes()).ToArray();
        var scaleTensor = Tensors[module + ".weight_scale"];
        var scale = scaleTensor.ToFloatArray();
        int groups = (int)scaleTensor.Shape[1];
        string strategy = args["strategy"]!.GetValue<string>();
        int groupSize = strategy == "group" ? args["group_size"]!.GetValue<int>() : columns;
        int[]? gIdx = Tensors.TryGetValue(module + ".weight_g_idx", out var g) ? MemoryMarshal.Cast<byte, int>(g.Bytes()).ToArray() : null;
        if ((args["actorder"]?.GetValue<string>() == "group") != (gIdx is not null)) throw new InvalidOperationException($"{module}: actorder and weight_g_idx disagree");

        var zero = new int[rows * groups];
        if (!args["symmetric"]!.GetValue<bool>())
        {
            var zpTensor = Tensors[module + ".weight_zero_point"];
            var zp = MemoryMarshal.Cast<byte, int>(zpTensor.Bytes()).ToArray();
            for (int k = 0; k < groups; k++)
            {
                var stream = Enumerable.Range(0, (int)zpTensor.Shape[0]).Select(w => zp[w * groups + k]).ToArray(); // column k of [words, groups]
                for (int r = 0; r < rows; r++) zero[r * groups + k] = Unsigned(stream, r, bits) - offset;
            }
        }
        var w = new float[(long)rows * columns];
        for (int r = 0; r < rows; r++)
        {
            var row = packed.AsSpan(r * wordsPerRow, wordsPerRow).ToArray();
            for (int c = 0; c < columns; c++)
            {
                int q = Unsigned(row, c, bits) - offset;
                int group = gIdx?[c] ?? c / groupSize;
                w[(long)r * columns + c] = scale[r * groups + group] * (q - zero[r * groups + group]);
            }
        }
        return w;
    }

    /// <summary>Value <paramref name="index"/> of a dense little-endian stream of <paramref name="bits"/>-bit values in int32 words.</summary>
    private static int Unsigned(int[] words, int index, int bits)
    {
        long bit = (long)index * bits;
        ulong pair = (uint)words[bit / 32] | (bit / 32 + 1 < words.Length ? (ulong)(uint)words[bit / 32 + 1] << 32 : 0);
        return (int)((pair >> (int)(bit % 32)) & ((1UL << bits) - 1));
    }

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }
}
