using LlmShrink.Formats;
using LlmShrink.Formats.Gguf;
using LlmShrink.Model;
using LlmShrink.Representations;

namespace LlmShrink.Export;

/// <summary>
/// Writes a loaded model as a GGUF file llama.cpp runs: the <c>{arch}.*</c> hyper-parameters and <c>tokenizer.ggml.*</c>
/// vocabulary its converter (convert_hf_to_gguf.py) writes, tensors under llama.cpp's names in ggml order, Q/K rows in
/// the interleaved order for "llama" (permuted from Hugging Face's rotate-half, unchanged when the source is already a
/// GGUF llama file) and unpermuted for qwen2/qwen3. See docs/FORMAT.md, "Export: GGUF".
/// </summary>
public static class GgufExporter
{
    /// <summary>Types <c>--type</c> accepts.</summary>
    public static readonly TensorType[] Types =
    [
        TensorType.F32, TensorType.F16, TensorType.BF16, TensorType.Q8_0, TensorType.Q4_0, TensorType.Q4_1,
        TensorType.Q5_0, TensorType.Q2_K, TensorType.Q3_K, TensorType.Q4_K, TensorType.Q5_K, TensorType.Q6_K,
    ];

    /// <summary>
    /// Writes the GGUF file. Matrices take <paramref name="type"/>, or <paramref name="denseType"/> when given for those a
    /// compression left unquantized (embeddings, lm_head, skipped layers). Compressed modules (GPTQ-packed, W8A8) keep
    /// the method's integers where the type can hold them (<see cref="GptqGgufMapping"/>); modules already stored as ggml
    /// blocks keep those blocks and their type. For compressed modules the result says which layers went over exactly and
    /// which were re-fit, and is null for a model without compressed modules. A compensated module (EoRA) is written as its
    /// base: llama.cpp applies the compensation as a LoRA adapter (<see cref="GgufLoraExporter"/>, <c>--lora FILE</c>).
    /// A cancelled <paramref name="cancellation"/> stops the write within a batch of rows and leaves no file behind.
    /// </summary>
    public static IReadOnlyList<MappedLayer>? Export(LoadedModel model, TensorType type, string outputPath, TensorType? denseType = null,
        CancellationToken cancellation = default)
    {
        if (!Types.Contains(type))
            throw new ShrinkException($"--type {type}: not a GGUF export type (supported: {string.Join(", ", Types)})");
        if (denseType is { } dense && !Types.Contains(dense))
            throw new ShrinkException($"--dense-type {dense}: not a GGUF export type (supported: {string.Join(", ", Types)})");
        var c = model.Config;
        string arch = Architecture(model);

        var writer = new GgufWriter();
        writer.AddString("general.architecture", arch);
        writer.AddString("general.name", ModelName(model.Source));
        writer.AddUInt32("general.file_type", FileType(type));
        if (TensorTypes.IsBlockQuantized(type)) writer.AddUInt32("general.quantization_version", 2);
        writer.AddUInt32($"{arch}.vocab_size", (uint)c.VocabSize);
        writer.AddUInt32($"{arch}.context_length", (uint)c.MaxPositions);
        writer.AddUInt32($"{arch}.embedding_length", (uint)c.HiddenSize);
        AddPerLayer(writer, $"{arch}.feed_forward_length", c, s => s.IntermediateSize);
        writer.AddUInt32($"{arch}.block_count", (uint)c.NumLayers);
        AddPerLayer(writer, $"{arch}.attention.head_count", c, s => s.Heads);
        AddPerLayer(writer, $"{arch}.attention.head_count_kv", c, s => s.KvHeads);
        // llama.cpp's default head size is hidden / the first block's heads, which per-block widths would make wrong.
        if (c.HeadDim * c.NumHeads != c.HiddenSize || !c.IsUniform)
        {
            writer.AddUInt32($"{arch}.attention.key_length", (uint)c.HeadDim);
            writer.AddUInt32($"{arch}.attention.value_length", (uint)c.HeadDim);
        }
        writer.AddUInt32($"{arch}.rope.dimension_count", (uint)c.HeadDim);
        writer.AddFloat32($"{arch}.rope.freq_base", c.RopeTheta);
        writer.AddFloat32($"{arch}.attention.layer_norm_rms_epsilon", c.RmsNormEps);
        GgufTokenizerExport.Write(writer, model);

        var mapped = new List<MappedLayer>();
        using var importance = OpenImportance(model.Source);
        foreach (var (ggufName, canonicalName) in TensorMap(c, model.Weights))
        {
            var rows = RowOrder(c, arch, canonicalName);
            string module = canonicalName.EndsWith(".weight", StringComparison.Ordinal) ? canonicalName[..^".weight".Length] : canonicalName;
            var found = LayerRepresentations.Find(model.Weights, module);
            if (found?.Base(model.Weights, module) is { IsDense: false } representation)
            {
                if (representation.StoredBlocks(model.Weights, module) is { } blocks)
                {
                    // Blocks a method already chose (the ggml method) are what llama.cpp runs: they go over byte for byte in
                    // their own type, whatever --type is, since re-encoding could only lose. The Q/K permutation moves whole
                    // rows, and each row is a whole number of blocks, so permuting rows of blocks permutes the weights' rows.
                    var copied = new MappedLayer(module, blocks.Type) { From = $"{representation.Name} {blocks.Type}" };
                    copied.Counts.AddBlock(exact: true, refit: false, count: blocks.ElementCount / TensorTypes.BlockElements(blocks.Type));
                    mapped.Add(copied);
                    writer.AddTensor(ggufName, [blocks.Rows, blocks.Columns], blocks.Type, stream => TensorRowWriter.Write(stream, blocks, blocks.Type, rows));
                    continue;
                }
                if (representation.Multiplied(model.Weights, module) is { } product)
                {
                    // Low-rank factors have no block form: their product is written like a float weight of the source.
                    var (productRows, productColumns) = representation.Shape(model.Weights, module);
                    var productType = ChooseType([productRows, productColumns], denseType ?? type);
                    writer.AddTensor(ggufName, [productRows, productColumns], productType, stream => TensorRowWriter.Write(stream, product(), productColumns, productType, rows));
                    continue;
                }
                // Compressed modules store integers times scales (GPTQ, W8A8); they are unpacked when written, one module at a time.
                var (outFeatures, inFeatures) = representation.Shape(model.Weights, module);
                long[] shape = [outFeatures, inFeatures];
                var layer = new MappedLayer(module, ChooseType(shape, GptqGgufMapping.TargetType(representation.Bits(model.Weights, module), type)));
                mapped.Add(layer);
                string importancePath = Path.Combine(model.Source, CompressedCheckpointWriter.ImportanceFile);
                writer.AddTensor(ggufName, shape, layer.Type, stream => GptqGgufMapping.Write(stream, ScaledIntegerMatrix.Read(representation, model.Weights, module), rows, layer,
                    Importance(importance, importancePath, module, inFeatures)));
                continue;
            }
            var tensor = model.Weights.Get(canonicalName);
            var target = ChooseType(tensor.Shape, denseType ?? type);
            writer.AddTensor(ggufName, tensor.Shape, target, stream => TensorRowWriter.Write(stream, tensor, target, rows));
        }
        if (c.RopeScaling is { } scaling && !model.Weights.Contains(TensorNames.RopeFrequencyFactors))
        {
            float[] factors = Llama3RopeFactors(c, scaling);
            writer.AddTensor("rope_freqs.weight", [factors.Length], TensorType.F32,
                stream => stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(factors.AsSpan())));
        }

        writer.Write(outputPath, model.Weights.Files.Select(f => f.Path), cancellation);
        return mapped.Count > 0 ? mapped : null;
    }

    /// <summary>
    /// The llama.cpp architecture a model is written as (its <c>general.architecture</c>); one llama.cpp cannot run as it
    /// is (sliding windows, qwen blocks of different widths, other architectures) is a one-line error.
    /// </summary>
    public static string Architecture(LoadedModel model)
    {
        var c = model.Config;
        string arch = c.Architecture switch
        {
            // llama.cpp runs Mistral as llama. Its llama blocks all take the first block's widths; "deci" (its Llama with
            // per-block head counts and FFN widths, written for Nemotron-51B) reads each block's own.
            "llama" or "mistral" => c.IsUniform ? "llama" : "deci",
            "qwen2" or "qwen3" when c.IsUniform => c.Architecture,
            "qwen2" or "qwen3" => throw ShrinkException.InFile(model.Source, $"blocks of different widths cannot be expressed in a GGUF {c.Architecture} file (llama.cpp sizes every {c.Architecture} block like the first)"),
            _ => throw ShrinkException.InFile(model.Source, $"cannot export architecture '{c.Architecture}' to GGUF"),
        };
        if (c.SlidingWindow is { } window && window < c.MaxPositions)
            throw ShrinkException.InFile(model.Source, $"sliding-window attention ({window} of {c.MaxPositions} positions) cannot be expressed in a GGUF {arch} file");
        return arch;
    }

    /// <summary>
    /// For a Q or K weight (<paramref name="canonicalName"/>), the source row of each row written for <paramref name="arch"/>
    /// — llama.cpp's llama graphs rotate interleaved pairs (<see cref="RopeRowOrder"/>) — or null when rows keep their order.
    /// </summary>
    public static Func<long, long>? RowOrder(ModelConfig c, string arch, string canonicalName) =>
        canonicalName.EndsWith(TensorNames.Q, StringComparison.Ordinal) || canonicalName.EndsWith(TensorNames.K, StringComparison.Ordinal)
            ? RopeRowOrder.SourceRow(c.RopeStyle, arch is "llama" or "deci" ? RopeStyle.Interleaved : RopeStyle.RotateHalf, c.HeadDim) : null;

    /// <summary>
    /// A block width as llama.cpp reads it (get_key_or_arr): one uint32 when every block has the same, else an int32 array of
    /// one per block (the element type every llama.cpp version's array reader accepts).
    /// </summary>
    private static void AddPerLayer(GgufWriter writer, string key, ModelConfig c, Func<LayerShape, int> width)
    {
        var widths = Enumerable.Range(0, c.NumLayers).Select(l => width(c.Layer(l))).ToArray();
        if (widths.All(w => w == widths[0])) writer.AddUInt32(key, (uint)widths[0]);
        else writer.AddInt32s(key, widths);
    }

    /// <summary>The compressed folder's importance.safetensors (see <see cref="CompressedCheckpointWriter.ImportanceFile"/>), or null.</summary>
    private static TensorSet? OpenImportance(string source)
    {
        string path = Path.Combine(source, CompressedCheckpointWriter.ImportanceFile);
        return Directory.Exists(source) && File.Exists(path) ? Formats.Safetensors.SafetensorsFile.LoadSet(path) : null;
    }

    /// <summary>A module's per-input-column importance, or null when none was recorded for it.</summary>
    private static float[]? Importance(TensorSet? set, string path, string module, long inFeatures)
    {
        if (set?.Find(module + CompressedCheckpointWriter.ImportanceSuffix) is not { } tensor) return null;
        if (tensor.Type != TensorType.F32 || tensor.Shape.Length != 1 || tensor.Shape[0] != inFeatures)
            throw ShrinkException.InFile(path, $"{tensor.Name}: expected F32 [{inFeatures}], found {tensor.Type} [{string.Join(", ", tensor.Shape)}]");
        var values = tensor.ToFloatArray();
        if (values.Any(v => !float.IsFinite(v) || v < 0))
            throw ShrinkException.InFile(path, $"{tensor.Name}: importance must be finite and non-negative");
        return values;
    }

    /// <summary>GGUF name → canonical name of every tensor the model uses, in llama.cpp's order.</summary>
    public static List<(string Gguf, string Canonical)> TensorMap(ModelConfig c, TensorSet weights)
    {
        var map = new List<(string, string)> { ("token_embd.weight", TensorNames.Embedding) };
        if (weights.Contains(TensorNames.RopeFrequencyFactors)) map.Add(("rope_freqs.weight", TensorNames.RopeFrequencyFactors));
        map.Add(("output_norm.weight", TensorNames.FinalNorm));
        // A compressed lm_head (any representation) maps like a compressed block linear.
        if (!c.TiedEmbeddings && LayerRepresentations.Find(weights, TensorNames.LmHeadModule) is not null)
            map.Add(("output.weight", TensorNames.LmHead));
        for (int i = 0; i < c.NumLayers; i++)
        {
            void Layer(string gguf, string canonical) => map.Add(($"blk.{i}.{gguf}", TensorNames.Layer(i, canonical)));
            Layer("attn_norm.weight", TensorNames.AttnNorm);
            Layer("attn_q.weight", TensorNames.Q);
            Layer("attn_k.weight", TensorNames.K);
            Layer("attn_v.weight", TensorNames.V);
            Layer("attn_output.weight", TensorNames.O);
            if (c.AttentionBias)
            {
                Layer("attn_q.bias", TensorNames.QBias);
                Layer("attn_k.bias", TensorNames.KBias);
                Layer("attn_v.bias", TensorNames.VBias);
            }
            if (c.QkNorm)
            {
                Layer("attn_q_norm.weight", TensorNames.QNorm);
                Layer("attn_k_norm.weight", TensorNames.KNorm);
            }
            Layer("ffn_norm.weight", TensorNames.FfnNorm);
            Layer("ffn_gate.weight", TensorNames.Gate);
            Layer("ffn_up.weight", TensorNames.Up);
            Layer("ffn_down.weight", TensorNames.Down);
        }
        return map;
    }

    /// <summary>
    /// The type a tensor of this shape is stored as. As in llama.cpp: 1-D tensors (norms, biases, rope factors) stay F32;
    /// matrices take the requested type. A row length that is not a whole number of blocks falls back the way
    /// llama-quantize does — Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0 (32-element blocks), and F16 when even those do not
    /// fit; the 32-element types, which llama-quantize would refuse, go straight to F16. For Q2_K and Q3_K llama-quantize
    /// falls back to IQ4_NL, which this project cannot write; Q4_0 takes its place (the same 4.5 bits per weight, on a
    /// uniform grid instead of IQ4_NL's non-linear one).
    /// </summary>
    public static TensorType ChooseType(long[] shape, TensorType requested)
    {
        if (shape.Length < 2) return TensorType.F32;
        long columns = shape[^1];
        if (columns % TensorTypes.BlockElements(requested) == 0) return requested;
        var fallback = requested switch
        {
            TensorType.Q2_K or TensorType.Q3_K => TensorType.Q4_0,
            TensorType.Q4_K => TensorType.Q5_0,
            TensorType.Q5_K => TensorType.Q5_1,
            TensorType.Q6_K => TensorType.Q8_0,
            _ => TensorType.F16,
        };
        return columns % TensorTypes.BlockElements(fallback) == 0 ? fallback : TensorType.F16;
    }

    /// <summary>llama.cpp's llama_ftype number for a file whose matrices are mostly <paramref name="type"/> (K-quants: Q2_K's
    /// own, the _S variants of the others).</summary>
    public static uint FileType(TensorType type) => type switch
    {
        TensorType.F32 => 0,
        TensorType.F16 => 1,
        TensorType.Q4_0 => 2,
        TensorType.Q4_1 => 3,
        TensorType.Q8_0 => 7,
        TensorType.Q5_0 => 8,
        TensorType.Q5_1 => 9,
        TensorType.Q2_K => 10,
        TensorType.Q3_K => 11,
        TensorType.Q4_K => 14,
        TensorType.Q5_K => 16,
        TensorType.Q6_K => 18,
        TensorType.BF16 => 32,
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };

    /// <summary>
    /// Llama 3.1's RoPE scaling as the per-frequency divisors llama.cpp reads from <c>rope_freqs.weight</c> (computed as its
    /// converter does): wavelengths shorter than original/high_freq_factor keep factor 1, longer than original/low_freq_factor
    /// get the full factor, and those between interpolate smoothly.
    /// </summary>
    public static float[] Llama3RopeFactors(ModelConfig c, Llama3RopeScaling s)
    {
        var factors = new float[c.HeadDim / 2];
        double lowWavelength = s.OriginalMaxPositions / (double)s.LowFreqFactor;
        double highWavelength = s.OriginalMaxPositions / (double)s.HighFreqFactor;
        for (int i = 0; i < factors.Length; i++)
        {
            double frequency = 1.0 / Math.Pow(c.RopeTheta, 2.0 * i / c.HeadDim);
            double wavelength = 2 * Math.PI / frequency;
            if (wavelength < highWavelength) factors[i] = 1;
            else if (wavelength > lowWavelength) factors[i] = s.Factor;
            else
            {
                double smooth = (s.OriginalMaxPositions / wavelength - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                factors[i] = (float)(1 / ((1 - smooth) / s.Factor + smooth));
            }
        }
        return factors;
    }

    private static string ModelName(string source)
    {
        string trimmed = source.TrimEnd('/', '\\');
        return Directory.Exists(trimmed) ? Path.GetFileName(trimmed) : Path.GetFileNameWithoutExtension(trimmed);
    }
}
