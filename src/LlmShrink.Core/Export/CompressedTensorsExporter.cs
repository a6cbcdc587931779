using System.Runtime.InteropServices;
using System.Text.Json;
using LlmShrink.Compression.Quantization;
using LlmShrink.Formats;
using LlmShrink.Formats.Safetensors;
using LlmShrink.Model;
using LlmShrink.Representations;

namespace LlmShrink.Export;

/// <summary>
/// Writes a compressed folder in compressed-tensors' layout (llm-compressor's checkpoints, loaded natively by vLLM and
/// transformers): group-quantized modules (GPTQ, RTN, AWQ; 2:4-sparse 4-bit as its plain 4-bit grid) as
/// <c>pack-quantized</c> — the same integers and fp16 scales, re-packed — W8A8 modules as <c>int-quantized</c> (their int8
/// weight and float32 row scales copied), and float modules copied and listed in <c>ignore</c>. Modules compressed-tensors
/// has no form for (low-rank factors, ggml blocks) are written as the float weights they compute, in the model's dtype,
/// and listed in <c>ignore</c>; a compensated module (EoRA) is written as its base. Every decision that loses something
/// comes back as a note. The folder is written under a temporary name and renamed into place. See docs/FORMAT.md,
/// "Export: compressed-tensors".
/// </summary>
public static class CompressedTensorsExporter
{
    /// <summary>How one linear module is written: quantized in a scheme, re-written as float (<paramref name="Dequantized"/>), or copied.</summary>
    private sealed record ModuleExport(string Module, LayerRepresentation Stored, CompressedTensorsScheme? Scheme, bool Dequantized);

    /// <summary>Writes the folder; returns the notes the command prints (what was written differently from the source, and why).</summary>
    /// <param name="cancellation">Stops the write within a batch of rows; a cancelled export throws and leaves no folder behind.</param>
    public static IReadOnlyList<string> Export(LoadedModel model, string outputFolder, long maxShardBytes = SafetensorsExporter.DefaultMaxShardBytes,
        CancellationToken cancellation = default)
    {
        if (maxShardBytes <= 0) throw new ShrinkException($"--max-shard-size must be positive, not {maxShardBytes}");
        var modules = Survey(model);
        if (!modules.Any(m => m.Scheme is not null))
            throw ShrinkException.InFile(model.Source, "has no quantized layers; run `llmshrink compress MODEL --recipe w4g128-gptq --calib FILE --out DIR` first and export that folder");
        var floatType = FloatType(model);

        using var output = new OutputFolder(outputFolder, model.Weights.Files.Select(f => f.Path).Append(model.Source));
        var rewritten = modules.Where(m => m.Scheme is { Int8Activations: false } || m.Dequantized).Select(m => m.Module + ".").ToList();
        var entries = model.Weights.Names
            .Where(name => !CompensatedRepresentation.IsFactor(name) && !rewritten.Any(prefix => name.StartsWith(prefix, StringComparison.Ordinal) && name != prefix + "bias"))
            .Select(name =>
            {
                var tensor = model.Weights.Get(name);
                return new SafetensorsWriter.Entry(name, tensor.Type, tensor.Shape, stream => TensorRowWriter.Write(stream, tensor, tensor.Type));
            }).ToList();
        var grids = new GridCache(model.Weights);
        foreach (var m in modules)
        {
            if (m.Dequantized)
            {
                var (rows, columns) = m.Stored.Shape(model.Weights, m.Module);
                entries.Add(new SafetensorsWriter.Entry(m.Module + ".weight", floatType, [rows, columns], stream =>
                    TensorRowWriter.Write(stream, LayerRepresentations.Dequantize(m.Stored, model.Weights, m.Module, model.Source), columns, floatType)));
            }
            else if (m.Scheme is { Int8Activations: false } scheme)
                entries.AddRange(PackedEntries(m.Module, m.Stored, scheme, grids));
        }
        SafetensorsExporter.WriteSharded(output.Path, [.. entries.OrderBy(e => e.Name, StringComparer.Ordinal)], maxShardBytes, cancellation);

        var quantized = modules.Where(m => m.Scheme is not null).Select(m => (m.Module, m.Scheme!)).ToList();
        var ignore = modules.Where(m => m.Scheme is null).Select(m => m.Module).ToList();
        if (!ignore.Contains(TensorNames.LmHeadModule) && !quantized.Any(q => q.Module == TensorNames.LmHeadModule))
            ignore.Add(TensorNames.LmHeadModule); // tied or float lm_head: a Linear the library lists as left alone
        var config = SafetensorsExporter.ConfigJson(model);
        config["quantization_config"] = CompressedTensorsScheme.QuantizationConfig(quantized, ignore);
        File.WriteAllText(output.File("config.json"), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        SafetensorsExporter.WriteTokenizer(model, output.Path);
        SafetensorsExporter.CopyProvenance(model, output.Path);
        cancellation.ThrowIfCancellationRequested();
        output.Commit();
        return Notes(modules, floatType);
    }

    /// <summary>Every decoder linear module, and lm_head when the folder has one, with how it will be written.</summary>
    private static List<ModuleExport> Survey(LoadedModel model)
    {
        var paths = Enumerable.Range(0, model.Config.NumLayers).SelectMany(layer => LinearRoles.All.Select(role => LinearRoles.ModulePath(layer, role))).ToList();
        if (LayerRepresentations.Find(model.Weights, TensorNames.LmHeadModule) is not null) paths.Add(TensorNames.LmHeadModule);
        var modules = new List<ModuleExport>();
        foreach (string module in paths)
        {
            var stored = LayerRepresentations.Of(model.Weights, module, model.Source).Base(model.Weights, module);
            if (stored.IsDense) modules.Add(new(module, stored, null, Dequantized: false));
            else if (stored is W8A8Representation) modules.Add(new(module, stored, CompressedTensorsScheme.W8A8, Dequantized: false));
            else if (Grid(stored, model.Weights, module) is { } grid) modules.Add(new(module, stored, SchemeOf(grid, module, model.Source), Dequantized: false));
            else modules.Add(new(module, stored, null, Dequantized: true));
        }
        return modules;
    }

    /// <summary>The codes, zero points and scales of a group-quantized module (GPTQ layout, or the 2:4 form's grid with its pruned weights at the zero code); null for other representations.</summary>
    private static QuantizedMatrix? Grid(LayerRepresentation stored, TensorSet weights, string module) => stored switch
    {
        GptqRepresentation => GptqRepresentation.Read(weights, module),
        Sparse24Representation => Sparse24Layer.ToGrid(Sparse24Representation.Read(weights, module)),
        _ => null,
    };

    /// <summary>
    /// The module's scheme. compressed-tensors' group strategy splits the (g_idx-sorted) columns into groups of exactly
    /// group_size (forward.py, _process_quantization), so a grid whose groups are not all that wide has no form there.
    /// </summary>
    private static CompressedTensorsScheme SchemeOf(QuantizedMatrix m, string module, string source)
    {
        int groupSize = GptqRepresentation.GroupSize(m);
        if (groupSize > 0 && (m.Columns % groupSize != 0 || m.GroupIndex.CountBy(g => g).Any(g => g.Value != groupSize)))
            throw ShrinkException.InFile(source, $"module '{module}': its {m.Columns} inputs are not {m.GroupCount} groups of exactly {groupSize}, which compressed-tensors' group strategy requires");
        return new CompressedTensorsScheme(m.Scheme.Bits, groupSize, GptqRepresentation.IsSymmetric(m), GptqRepresentation.IsActOrder(m), Int8Activations: false);
    }

    /// <summary>
    /// pack-quantized tensors (compressed-tensors ≥ 0.17, compressors/pack_quantized: pack_to_int32): compressed-tensors
    /// holds signed levels q = code − 2^(bits−1) and zero points zp = zero − 2^(bits−1), so w = scale · (q − zp) =
    /// scale · (code − zero), and packs each as q + 2^(bits−1) — the GPTQ code and zero themselves — into a dense
    /// little-endian bit stream of int32 words (value i at bits [i·bits, (i+1)·bits), a 3-bit value may straddle two
    /// words; 2-, 4- and 8-bit values never do, so for them this is also the older libraries' layout): weights along the
    /// input (<c>weight_packed</c> [out, ⌈in·bits/32⌉]), zero points along the output (<c>weight_zero_point</c>
    /// [⌈out·bits/32⌉, groups], asymmetric modules only). Scales [out, groups] stay F16, as the grid stores them;
    /// <c>weight_shape</c> = [out, in] as I64 (vLLM's parameter dtype); <c>weight_g_idx</c> I32 [in], each column's
    /// group, with act-order.
    /// </summary>
    private static IEnumerable<SafetensorsWriter.Entry> PackedEntries(string module, LayerRepresentation stored, CompressedTensorsScheme scheme, GridCache grids)
    {
        var (rows, columns) = stored.Shape(grids.Weights, module);
        int bits = scheme.Bits;
        int groups = scheme.GroupSize > 0 ? columns / scheme.GroupSize : 1;
        QuantizedMatrix Grid() => grids.Get(module, stored);
        yield return new(module + ".weight_packed", TensorType.I32, [rows, Words(columns, bits)], stream =>
        {
            var m = Grid();
            var row = new int[Words(columns, bits)];
            for (int r = 0; r < rows; r++)
            {
                Array.Clear(row);
                for (int c = 0; c < columns; c++) Put(row, stride: 1, (long)c * bits, bits, m.Codes[(long)r * columns + c]);
                stream.Write(MemoryMarshal.AsBytes(row.AsSpan()));
            }
        });
        yield return new(module + ".weight_scale", TensorType.F16, [rows, groups], stream =>
        {
            var m = Grid();
            var scales = new Half[(long)rows * groups];
            for (int r = 0; r < rows; r++)
                for (int g = 0; g < groups; g++) scales[(long)r * groups + g] = (Half)m.Scales[(long)g * rows + r];
            stream.Write(MemoryMarshal.AsBytes(scales.AsSpan()));
        });
        if (!scheme.Symmetric)
            yield return new(module + ".weight_zero_point", TensorType.I32, [Words(rows, bits), groups], stream =>
            {
                var m = Grid();
                var packed = new int[(long)Words(rows, bits) * groups];
                for (int g = 0; g < groups; g++)
                    for (int r = 0; r < rows; r++) Put(packed.AsSpan(g), stride: groups, (long)r * bits, bits, m.Zeros[(long)g * rows + r]);
                stream.Write(MemoryMarshal.AsBytes(packed.AsSpan()));
            });
        if (scheme.ActOrder)
            yield return new(module + ".weight_g_idx", TensorType.I32, [columns], stream => stream.Write(MemoryMarshal.AsBytes(Grid().GroupIndex.AsSpan())));
        yield return new(module + ".weight_shape", TensorType.I64, [2], stream => stream.Write(MemoryMarshal.AsBytes(new long[] { rows, columns }.AsSpan())));
    }

    /// <summary>int32 words holding <paramref name="values"/> values of <paramref name="bits"/> bits, densely.</summary>
    private static int Words(int values, int bits) => (int)(((long)values * bits + 31) / 32);

    /// <summary>
    /// ORs <paramref name="value"/> (below 2^bits) into the bit stream at <paramref name="bit"/>, whose k-th word is
    /// <paramref name="words"/>[k · <paramref name="stride"/>]; the bits past a word's end go to the next word's lowest bits.
    /// </summary>
    private static void Put(Span<int> words, int stride, long bit, int bits, int value)
    {
        int word = (int)(bit / 32), shift = (int)(bit % 32);
        words[word * stride] |= value << shift;
        if (shift + bits > 32) words[(word + 1) * stride] |= value >> (32 - shift);
    }

    /// <summary>
    /// The last module's unpacked grid: the writer streams tensors one after the other and a module's names sort
    /// together, so each module is unpacked once and only one is held at a time.
    /// </summary>
    private sealed class GridCache(TensorSet weights)
    {
        private (string Module, QuantizedMatrix Grid)? _last;
        public TensorSet Weights => weights;

        public QuantizedMatrix Get(string module, LayerRepresentation stored)
        {
            if (_last is not { } last || last.Module != module) _last = last = (module, Grid(stored, weights, module)!);
            return last.Grid;
        }
    }

    /// <summary>The model's float dtype (its embedding's), for modules written as float weights.</summary>
    private static TensorType FloatType(LoadedModel model) =>
        model.Weights.Get(TensorNames.Embedding).Type is var type && SafetensorsExporter.DTypes.Contains(type) ? type : TensorType.F32;

    private static List<string> Notes(List<ModuleExport> modules, TensorType floatType)
    {
        var notes = new List<string>();
        var dequantized = modules.Where(m => m.Dequantized).ToList();
        if (dequantized.Count > 0)
            notes.Add($"note: {dequantized.Count} modules stored as {string.Join("/", dequantized.Select(m => m.Stored.Name).Distinct())} (e.g. {dequantized[0].Module}) have no compressed-tensors form; written as their {floatType} weights and listed in ignore");
        var narrow = modules.Where(m => m.Scheme is { Bits: not (4 or 8) }).ToList();
        if (narrow.Count > 0)
            notes.Add($"note: {narrow.Count} modules are {string.Join("/", narrow.Select(m => m.Scheme!.Bits).Distinct().Order())}-bit (e.g. {narrow[0].Module}); compressed-tensors reads 1–8-bit pack-quantized from 0.17 on, older versions and vLLM's Marlin kernels take 4 and 8 bits only");
        if (modules.Any(m => m.Module == TensorNames.LmHeadModule && m.Scheme is not null))
            notes.Add("note: lm_head is quantized; vLLM loads a compressed-tensors lm_head from its 2026-03 fix (PR #37291) on, older versions stop at 'lm_head.weight_packed'");
        // vLLM runs q/k/v and gate/up as one fused module and gives it the scheme of its first part (compressed_tensors/utils.py, find_matched_target).
        var split = modules.Where(m => m.Module != TensorNames.LmHeadModule)
            .GroupBy(m => FusedGroup(m.Module))
            .Where(g => g.Key is not null && g.Select(m => m.Scheme).Distinct().Count() > 1)
            .Select(g => g.Key!).ToList();
        if (split.Count > 0)
            notes.Add($"note: {split.Count} fused projections ({split[0]}{(split.Count > 1 ? ", …" : "")}) mix schemes; transformers loads them, vLLM fuses q/k/v and gate/up and needs one scheme per fused module");
        return notes;
    }

    /// <summary>"model.layers.3.self_attn.qkv" for q/k/v, ".mlp.gate_up" for gate/up, null for o_proj and down_proj (never fused).</summary>
    private static string? FusedGroup(string module)
    {
        string block = module[..module.LastIndexOf('.')];
        return module[(block.Length + 1)..] switch
        {
            "q_proj" or "k_proj" or "v_proj" => block + ".qkv",
            "gate_proj" or "up_proj" => block + ".gate_up",
            _ => null,
        };
    }
}
