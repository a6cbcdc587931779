using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using LlmShrink.Cli.Commands;
using LlmShrink.Compression;
using LlmShrink.Compression.Recipes;
using LlmShrink.Export;
using LlmShrink.Formats;
using LlmShrink.Model;
using LlmShrink.Model.Synthesis;
using LlmShrink.Tokenization;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>
/// Mutation fuzzing past the headers <see cref="FuzzTests"/> covers: a GPTQ-compressed folder (shapes, dtypes and offsets
/// of its qweight/qzeros/scales/g_idx, its config.json quantization fields, its shard index, deleted or renamed shards,
/// its integer data), GGUF files whose tensors are K-quant and Q8_0 blocks, tokenizer.json, and YAML recipes. Every
/// case must end as the CLI would end with exit 0 or 2: success or a <see cref="ShrinkException"/> with a one-line
/// message — never another exception (exit 1, a stack trace) or a hang. Case i of seed s draws its mutation from
/// <c>new Random(s * 100_000 + i)</c>, so a failure names the seed and case that replay it
/// (<see cref="RegressionCasesStayClean"/>).
/// </summary>
public class ContentFuzzTests
{
    /// <summary>Generous: a tiny model loads, runs and exports in milliseconds; only a hang takes this long.</summary>
    private static readonly TimeSpan CaseTimeout = TimeSpan.FromSeconds(30);

    /// <summary>Each target: a name, its seed, and a case that mutates a fresh copy of its input in a folder and says how, with what runs it.</summary>
    private static readonly Dictionary<string, (int Seed, Func<Random, string, (string What, Action Run)> Case)> Targets = new()
    {
        ["compressed-folder"] = (Seed: 71, CompressedFolderCase),
        ["gguf-blocks"] = (Seed: 72, GgufBlocksCase),
        ["tokenizer-json"] = (Seed: 73, TokenizerJsonCase),
        ["recipe"] = (Seed: 74, RecipeCase),
    };

    [Theory]
    [InlineData("compressed-folder", 1000)]
    [InlineData("gguf-blocks", 1000)]
    [InlineData("tokenizer-json", 1000)]
    [InlineData("recipe", 2000)]
    public void MutationsEndInSuccessOrOneLineUserError(string target, int cases)
    {
        var (seed, run) = Targets[target];
        var failures = new List<string>();
        using var work = new TempDir();
        for (int i = 0; i < cases && failures.Count < 5; i++)
            if (RunCase(run, seed, i, work.Path) is { } failure) failures.Add(failure);
        Assert.True(failures.Count == 0, $"{target}:\n" + string.Join("\n", failures));
    }

    /// <summary>Cases that once crashed or hung, replayed (seed, case) by (seed, case).</summary>
    [Theory]
    [InlineData("recipe", 74, 38)]            // an unclosed flow collection: YamlDotNet's scanner threw InvalidOperationException
    [InlineData("recipe", 174, 508)]          // an alias in a mapping: YamlDotNet threw ArgumentException
    [InlineData("tokenizer-json", 73, 1118)]  // post_processor SpecialToken id null: ArgumentNullException
    [InlineData("tokenizer-json", 273, 403)]  // a special token with an empty ids list: IndexOutOfRangeException
    [InlineData("tokenizer-json", 73, 1127)]  // two vocab entries with one id: ArgumentException from a SortedDictionary
    public void RegressionCasesStayClean(string target, int seed, int caseNumber)
    {
        using var work = new TempDir();
        string? failure = RunCase(Targets[target].Case, seed, caseNumber, work.Path);
        Assert.True(failure is null, failure);
    }

    /// <summary>
    /// Runs one case in a fresh sub-folder of <paramref name="work"/>; returns what went wrong, or null. The mutation is
    /// drawn before the clock starts: the first draw builds the target's input (an export of a small model, seconds on
    /// a loaded 2-core CI host — CI once timed it out), and only the product code run on the mutated files can hang.
    /// </summary>
    private static string? RunCase(Func<Random, string, (string What, Action Run)> mutate, int seed, int caseNumber, string work)
    {
        string folder = Path.Combine(work, $"case{caseNumber}");
        Directory.CreateDirectory(folder);
        var (what, run) = mutate(new Random(seed * 100_000 + caseNumber), folder);
        bool answered = HangGuard.TryRun(() =>
        {
            try
            {
                run();
                return null;
            }
            catch (ShrinkException e)
            {
                if (e.Message.Contains('\n') || e.Message.Contains("   at ") || e.Message.Trim().Length == 0)
                    return $"not a one-line message: {e.Message}";
                return null;
            }
            catch (Exception e)
            {
                return $"exit 1: {e.GetType().Name}: {e.Message.ReplaceLineEndings(" ")} {string.Join(" ", e.StackTrace?.Split('\n').Take(4).Select(l => l.Trim()) ?? [])}";
            }
        }, CaseTimeout, out string? failure);
        if (answered) Directory.Delete(folder, recursive: true);
        else failure = HangGuard.Hang(CaseTimeout);
        return failure is null ? null : $"seed {seed} case {caseNumber} ({what}): {failure}";
    }

    // ---- Compressed folder ------------------------------------------------------------------------------------------

    /// <summary>
    /// The files (name, bytes) of a 2-block llama (hidden 64) compressed with 4-bit GPTQ, groups of 32 and act-order, so
    /// g_idx is not trivial. Kept in memory: the folder made for them is deleted at once.
    /// </summary>
    private static readonly Lazy<(string Name, byte[] Bytes)[]> CompressedFolder = new(() =>
    {
        string root = Directory.CreateTempSubdirectory("llmshrink-fuzz-compressed-").FullName;
        string model = Path.Combine(root, "model");
        RandomModel.Write(model, new ModelConfig
        {
            Architecture = "llama", HiddenSize = 64, IntermediateSize = 128, NumLayers = 2, NumHeads = 4, NumKvHeads = 2,
            HeadDim = 16, VocabSize = 256, MaxPositions = 64, RmsNormEps = 1e-5f, RopeTheta = 10000f, TiedEmbeddings = false,
        }, TensorType.F16, seed: 7);
        string recipe = Path.Combine(root, "recipe.yaml");
        File.WriteAllText(recipe, "modifiers:\n  - method: gptq\n    targets: [Linear]\n    ignore: [lm_head]\n    bits: 4\n    group_size: 32\n    act_order: true\n");
        string output = Path.Combine(root, "compressed");
        CompressionJob.Run(new CompressionRequest(model, recipe, CalibrationSet.RandomSource, Samples: 4, SequenceLength: 32, Seed: 1, output));
        var files = Directory.GetFiles(output).Select(file => (Path.GetFileName(file), File.ReadAllBytes(file))).ToArray();
        Directory.Delete(root, recursive: true);
        return files;
    });

    private static (string, Action) CompressedFolderCase(Random random, string folder)
    {
        string model = Path.Combine(folder, "model");
        Directory.CreateDirectory(model);
        foreach (var (name, bytes) in CompressedFolder.Value) File.WriteAllBytes(Path.Combine(model, name), bytes);
        string what = string.Join("; ", Enumerable.Range(0, 1 + random.Next(2)).Select(_ => MutateCompressedFolder(random, model)));
        return (what, () => RunModel(model, folder));
    }

    private static readonly string[] QuantizedSuffixes = [".qweight", ".qzeros", ".scales", ".g_idx"];

    private static string MutateCompressedFolder(Random random, string model)
    {
        var shards = Directory.GetFiles(model, "*.safetensors").Order(StringComparer.Ordinal).ToArray();
        string shard = shards[random.Next(shards.Length)];
        string name = Path.GetFileName(shard);
        switch (random.Next(8))
        {
            case 0: case 1: case 2:
                return $"{name}: " + EditSafetensorsHeader(shard, random);
            case 3:
                return "config.json: " + EditJsonFile(Path.Combine(model, "config.json"), random, QuantizationEdits);
            case 4:
                {
                    string index = Path.Combine(model, "model.safetensors.index.json");
                    if (random.Next(3) == 0)
                    {
                        byte[] bytes = File.ReadAllBytes(index);
                        int length = random.Next(bytes.Length);
                        File.WriteAllBytes(index, bytes[..length]);
                        return $"index truncated to {length}";
                    }
                    return "index: " + EditJsonFile(index, random, IndexEdits);
                }
            case 5:
                if (random.Next(2) == 0) { File.Delete(shard); return $"{name} deleted"; }
                File.Move(shard, shard + ".renamed");
                return $"{name} renamed";
            case 6:
                {
                    byte[] bytes = File.ReadAllBytes(shard);
                    int dataStart = 8 + (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
                    int count = 1 + random.Next(16);
                    for (int k = 0; k < count && dataStart < bytes.Length; k++) bytes[dataStart + random.Next(bytes.Length - dataStart)] = (byte)random.Next(256);
                    File.WriteAllBytes(shard, bytes);
                    return $"{name}: {count} data bytes replaced";
                }
            default:
                {
                    byte[] bytes = File.ReadAllBytes(shard);
                    int length = random.Next(bytes.Length);
                    File.WriteAllBytes(shard, bytes[..length]);
                    return $"{name} truncated to {length}";
                }
        }
    }

    /// <summary>Rewrites a safetensors header with one tensor entry's shape, dtype, offsets or name changed (the data stays).</summary>
    private static string EditSafetensorsHeader(string path, Random random)
    {
        byte[] bytes = File.ReadAllBytes(path);
        // An earlier mutation of the same case may have truncated the file already.
        if (bytes.Length < 8 || BinaryPrimitives.ReadUInt64LittleEndian(bytes) is var length && length > (ulong)bytes.Length - 8) return "(already truncated)";
        int headerLength = (int)length;
        var header = JsonNode.Parse(bytes.AsSpan(8, headerLength))!.AsObject();
        var names = header.Select(p => p.Key).Where(k => k != "__metadata__").ToList();
        // Mostly the quantized tensors, whose shapes must agree with one another.
        var quantized = names.Where(n => QuantizedSuffixes.Any(s => n.EndsWith(s, StringComparison.Ordinal))).ToList();
        string tensor = quantized.Count > 0 && random.Next(4) != 0 ? quantized[random.Next(quantized.Count)] : names[random.Next(names.Count)];
        var entry = header[tensor]!.AsObject();
        string what;
        switch (random.Next(6))
        {
            case 0:
                {
                    var shape = entry["shape"]!.AsArray();
                    if (shape.Count == 0) { shape.Add(2); what = $"{tensor} shape gained a dimension"; break; }
                    int dim = random.Next(shape.Count);
                    long old = shape[dim]!.GetValue<long>();
                    long[] choices = [old + 1, old - 1, old * 2, old / 2, 0, 1, old * 8];
                    long value = choices[random.Next(choices.Length)];
                    shape[dim] = value;
                    what = $"{tensor} shape[{dim}] {old} → {value}";
                    break;
                }
            case 1:
                {
                    var shape = entry["shape"]!.AsArray();
                    if (random.Next(2) == 0 && shape.Count > 0) { shape.RemoveAt(shape.Count - 1); what = $"{tensor} lost its last dimension"; }
                    else { shape.Add(1 + random.Next(3)); what = $"{tensor} gained a dimension"; }
                    break;
                }
            case 2:
                {
                    string[] dtypes = ["I32", "F16", "F32", "BF16", "I8", "U8", "I64", "F64", "BOOL", "Q4"];
                    string dtype = dtypes[random.Next(dtypes.Length)];
                    what = $"{tensor} dtype {entry["dtype"]} → {dtype}";
                    entry["dtype"] = dtype;
                    break;
                }
            case 3:
                {
                    var offsets = entry["data_offsets"]!.AsArray();
                    int which = random.Next(2);
                    long old = offsets[which]!.GetValue<long>();
                    long[] choices = [old + 1, old - 4, old + 4096, 0, long.MaxValue / 2];
                    long value = choices[random.Next(choices.Length)];
                    offsets[which] = value;
                    what = $"{tensor} data_offsets[{which}] {old} → {value}";
                    break;
                }
            case 4:
                header.Remove(tensor);
                what = $"{tensor} removed";
                break;
            default:
                {
                    // Renamed to another quantized tensor's role (qweight ↔ scales, …), or to a name nothing expects.
                    string suffix = QuantizedSuffixes[random.Next(QuantizedSuffixes.Length)];
                    int dot = tensor.LastIndexOf('.');
                    string renamed = random.Next(3) == 0 ? tensor + ".extra" : tensor[..dot] + suffix;
                    header.Remove(tensor);
                    header[renamed] = entry;
                    what = $"{tensor} renamed {renamed}";
                    break;
                }
        }
        byte[] json = Encoding.UTF8.GetBytes(header.ToJsonString());
        var rewritten = new byte[8 + json.Length + bytes.Length - 8 - headerLength];
        BinaryPrimitives.WriteUInt64LittleEndian(rewritten, (ulong)json.Length);
        json.CopyTo(rewritten, 8);
        bytes.AsSpan(8 + headerLength).CopyTo(rewritten.AsSpan(8 + json.Length));
        File.WriteAllBytes(path, rewritten);
        return what;
    }

    private static readonly JsonNode?[] OddValues =
        [null, 0, -1, 1, 2, 3, 5, 7, 8, 16, 31, 33, 1 << 30, long.MaxValue, 1e308, -0.5, 0.5, true, false, "4", "", "abc", new JsonArray(), new JsonObject()];

    private static readonly string[] QuantizationEdits =
        ["quantization_config.bits", "quantization_config.group_size", "quantization_config.sym", "quantization_config.desc_act",
         "quantization_config.quant_method", "quantization_config", "hidden_size", "intermediate_size", "num_hidden_layers",
         "num_attention_heads", "num_key_value_heads", "vocab_size", "head_dim", "tie_word_embeddings"];

    private static readonly string[] IndexEdits = ["weight_map", "weight_map.*", "metadata"];

    /// <summary>Sets, or removes, one field (a dotted path; "*" picks one member at random) of a JSON file to an odd value.</summary>
    private static string EditJsonFile(string path, Random random, string[] fields)
    {
        // An earlier mutation of the same case may have truncated the file already.
        if (ReadJsonObject(path) is not { } root) return "(already broken)";
        string field = fields[random.Next(fields.Length)];
        var parts = field.Split('.');
        JsonObject parent = root;
        for (int p = 0; p < parts.Length - 1; p++)
        {
            if (parent[parts[p]] is not JsonObject child) return $"{field} absent";
            parent = child;
        }
        string key = parts[^1];
        if (key == "*")
        {
            if (parent.Count == 0) return $"{field} empty";
            key = parent.ElementAt(random.Next(parent.Count)).Key;
            // An index entry pointing at a shard that is not there, or at another shard.
            string[] shards = ["missing.safetensors", "model-00001-of-00003.safetensors", "../outside.safetensors", ""];
            if (random.Next(2) == 0)
            {
                parent[key] = shards[random.Next(shards.Length)];
                File.WriteAllText(path, root.ToJsonString());
                return $"{field[..^1]}{key} → {parent[key]}";
            }
        }
        if (random.Next(4) == 0)
        {
            parent.Remove(key);
            File.WriteAllText(path, root.ToJsonString());
            return $"{field} removed";
        }
        var value = OddValues[random.Next(OddValues.Length)]?.DeepClone();
        parent[key] = value;
        File.WriteAllText(path, root.ToJsonString());
        return $"{parts[0]}{(parts.Length > 1 ? "." + key : "")} = {value?.ToJsonString() ?? "null"}";
    }

    private static JsonObject? ReadJsonObject(string path)
    {
        try { return File.Exists(path) ? JsonNode.Parse(File.ReadAllText(path)) as JsonObject : null; }
        catch (JsonException) { return null; }
    }

    /// <summary>What the commands do with a model: load it, decode rows, run two tokens, and, given an output folder, export it to GGUF.</summary>
    private static void RunModel(string model, string? exportFolder)
    {
        using (var loaded = ModelLoader.Load(model))
        {
            foreach (var t in loaded.Weights.All)
            {
                if (t.Rows == 0 || t.Columns > 1 << 16) continue;
                var row = new float[t.Columns];
                for (long r = 0; r < t.Rows; r++) t.DequantizeRow(r, row);
            }
            using var transformer = new Transformer(loaded, threads: 1);
            var cache = transformer.NewCache(4);
            transformer.Forward([1, Math.Min(7, loaded.Config.VocabSize - 1)], cache, new float[loaded.Config.VocabSize]);
        }
        if (exportFolder is not null)
            ExportCommand.Run(model, "gguf", "Q8_0", null, Path.Combine(exportFolder, "out.gguf"), null, null, console: TextWriter.Null);
    }

    // ---- GGUF block data --------------------------------------------------------------------------------------------

    /// <summary>A 2-block llama with K-quant-sized rows (hidden 256) as GGUF twice: Q4_K with Q6_K embeddings, and Q8_0.</summary>
    private static readonly Lazy<(byte[] Bytes, int DataStart)[]> QuantizedGgufs = new(() =>
    {
        string root = Directory.CreateTempSubdirectory("llmshrink-fuzz-gguf-").FullName;
        string model = Path.Combine(root, "model");
        RandomModel.Write(model, new ModelConfig
        {
            Architecture = "llama", HiddenSize = 256, IntermediateSize = 512, NumLayers = 2, NumHeads = 4, NumKvHeads = 2,
            HeadDim = 64, VocabSize = 512, MaxPositions = 64, RmsNormEps = 1e-5f, RopeTheta = 10000f, TiedEmbeddings = false,
        }, TensorType.F16, seed: 8);
        var files = new List<(byte[], int)>();
        foreach (var (type, dense) in new[] { (TensorType.Q4_K, TensorType.Q6_K), (TensorType.Q8_0, TensorType.Q8_0) })
        {
            string path = Path.Combine(root, $"{type}.gguf");
            using (var loaded = ModelLoader.Load(model)) GgufExporter.Export(loaded, type, path, dense);
            using var exported = ModelLoader.Load(path);
            files.Add((File.ReadAllBytes(path), (int)exported.Weights.All.Min(t => t.Offset)));
        }
        Directory.Delete(root, recursive: true);
        return [.. files];
    });

    private static (string, Action) GgufBlocksCase(Random random, string folder)
    {
        var (original, dataStart) = QuantizedGgufs.Value[random.Next(QuantizedGgufs.Value.Length)];
        var bytes = (byte[])original.Clone();
        string what;
        switch (random.Next(5))
        {
            case 0:
                {
                    int count = 1 + random.Next(64);
                    for (int k = 0; k < count; k++) bytes[dataStart + random.Next(bytes.Length - dataStart)] = (byte)random.Next(256);
                    what = $"{count} block bytes replaced";
                    break;
                }
            case 1:
                {
                    // fp16 NaN, infinity, largest finite and subnormal written where block scales may sit.
                    ushort[] halves = [0x7E00, 0x7C00, 0xFC00, 0x7BFF, 0x0001, 0x8000];
                    int count = 1 + random.Next(32);
                    for (int k = 0; k < count; k++)
                        BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(dataStart + random.Next(bytes.Length - dataStart - 2)), halves[random.Next(halves.Length)]);
                    what = $"{count} special fp16 values in the blocks";
                    break;
                }
            case 2:
                {
                    int from = dataStart + random.Next(bytes.Length - dataStart), length = Math.Min(bytes.Length - from, 1 + random.Next(4096));
                    bytes.AsSpan(from, length).Fill(random.Next(2) == 0 ? (byte)0xFF : (byte)0);
                    what = $"{length} block bytes filled from {from}";
                    break;
                }
            case 3:
                {
                    // A tensor info's type id or dimension (u32/u64 fields just before the data) changed.
                    int at = random.Next(dataStart - 8);
                    uint value = (uint)random.Next(40);
                    BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(at), value);
                    what = $"u32 {value} at {at}";
                    break;
                }
            default:
                {
                    int length = dataStart + random.Next(bytes.Length - dataStart);
                    bytes = bytes[..length];
                    what = $"truncated to {length} in the data";
                    break;
                }
        }
        string path = Path.Combine(folder, "model.gguf");
        File.WriteAllBytes(path, bytes);
        // No export: re-encoding every block would take most of the time, and loading already decodes them.
        return (what, () => RunModel(path, exportFolder: null));
    }

    // ---- tokenizer.json ---------------------------------------------------------------------------------------------

    private static readonly Lazy<string[]> TokenizerJsons = new(() =>
        [JsonSerializer.Serialize(TokenizerJsonTests.ByteLevelJson(false)), JsonSerializer.Serialize(TokenizerJsonTests.ByteLevelJson(true)),
         JsonSerializer.Serialize(TokenizerJsonTests.SentencePieceJson())]);

    private static readonly string[] SampleTexts = ["Once upon a time, 42 € 😀", "the theme\n\n  <|eot|>", "ab ab ba", "", "\u0000\uFFFD"];

    private static (string, Action) TokenizerJsonCase(Random random, string folder)
    {
        string text = TokenizerJsons.Value[random.Next(TokenizerJsons.Value.Length)];
        string what;
        if (random.Next(4) == 0)
        {
            byte[] bytes = Encoding.UTF8.GetBytes(text);
            if (random.Next(2) == 0) { int length = random.Next(bytes.Length); bytes = bytes[..length]; what = $"truncated to {length}"; }
            else { int count = 1 + random.Next(8); for (int k = 0; k < count; k++) bytes[random.Next(bytes.Length)] = (byte)random.Next(256); what = $"{count} bytes replaced"; }
            File.WriteAllBytes(Path.Combine(folder, "tokenizer.json"), bytes);
        }
        else
        {
            var root = JsonNode.Parse(text)!;
            what = EditRandomNode(root, random);
            File.WriteAllText(Path.Combine(folder, "tokenizer.json"), root.ToJsonString());
        }
        return (what, () =>
        {
            var tokenizer = TokenizerFactory.FromFolder(folder);
            if (tokenizer is not null)
                foreach (string sample in SampleTexts) tokenizer.Decode(tokenizer.Encode(sample, addBos: true));
        });
    }

    /// <summary>Replaces, removes or adds one node anywhere in the tree (a random walk from the root).</summary>
    private static string EditRandomNode(JsonNode root, Random random)
    {
        JsonNode node = root;
        string path = "$";
        for (int depth = 0; depth < 8; depth++)
        {
            var children = node switch
            {
                JsonObject o => o.Select(p => (Key: (object)p.Key, Node: p.Value)).ToList(),
                JsonArray a => a.Select((n, i) => (Key: (object)i, Node: n)).ToList(),
                _ => [],
            };
            if (children.Count == 0 || (depth > 0 && random.Next(3) == 0)) break;
            var (key, child) = children[random.Next(children.Count)];
            if (child is null || child is JsonValue || random.Next(4) == 0)
            {
                int action = random.Next(3);
                var value = OddValues[random.Next(OddValues.Length)]?.DeepClone();
                if (node is JsonObject o)
                {
                    if (action == 0) { o.Remove((string)key); return $"{path}.{key} removed"; }
                    if (action == 1) { o["fuzz" + random.Next(3)] = value; return $"{path}.fuzz added {value?.ToJsonString() ?? "null"}"; }
                    o[(string)key] = value;
                }
                else if (node is JsonArray a)
                {
                    if (action == 0) { a.RemoveAt((int)key); return $"{path}[{key}] removed"; }
                    if (action == 1) { a.Add(value); return $"{path} appended {value?.ToJsonString() ?? "null"}"; }
                    a[(int)key] = value;
                }
                return $"{path}.{key} = {value?.ToJsonString() ?? "null"}";
            }
            node = child;
            path += $".{key}";
        }
        return $"{path} unchanged";
    }

    // ---- Recipes ----------------------------------------------------------------------------------------------------

    private static readonly Lazy<string[]> RecipeTexts = new(() =>
    [
        .. RecipePresets.Names.Select(name => { RecipePresets.TryGet(name, out var yaml); return yaml!; }),
        """
        modifiers:
          - method: smoothquant
            alpha: 0.5
          - method: gptq
            targets: [Linear, "re:.*mlp.*"]
            ignore: [lm_head, "model.layers.0.self_attn.q_proj"]
            bits: 4
            group_size: 128
            act_order: true
          - method: sparsegpt
            sparsity: 0.5
            pattern: "2:4"
        """,
    ]);

    private static readonly string[] YamlFragments =
        ["-1", "0", "1e309", ".nan", "~", "[]", "{}", "[1, [2, [3]]]", "\"", "'", ": :", "&a", "*a", "!!binary AA==", "<<: *a",
         "99999999999999999999", "0x10", "true", "\t", "- ", "? ", "|", ">", "#", "{a: [", "\u00e9", "\\u0000", "method: gptq", "bits: 3"];

    private static (string, Action) RecipeCase(Random random, string folder)
    {
        string text = RecipeTexts.Value[random.Next(RecipeTexts.Value.Length)];
        var lines = text.Split('\n').ToList();
        string what;
        switch (random.Next(6))
        {
            case 0:
                {
                    // A value replaced: the text after a line's first ": ", or a list item.
                    int line = random.Next(lines.Count);
                    int colon = lines[line].IndexOf(": ", StringComparison.Ordinal);
                    string fragment = YamlFragments[random.Next(YamlFragments.Length)];
                    lines[line] = colon >= 0 ? lines[line][..(colon + 2)] + fragment : lines[line] + fragment;
                    what = $"line {line + 1} value → {fragment}";
                    break;
                }
            case 1:
                {
                    int line = random.Next(lines.Count);
                    lines.RemoveAt(line);
                    what = $"line {line + 1} deleted";
                    break;
                }
            case 2:
                {
                    int line = random.Next(lines.Count), to = random.Next(lines.Count);
                    lines.Insert(to, lines[line]);
                    what = $"line {line + 1} copied before line {to + 1}";
                    break;
                }
            case 3:
                {
                    int line = random.Next(lines.Count);
                    int change = random.Next(5) - 2;
                    lines[line] = change >= 0 ? new string(' ', change * 2 + 1) + lines[line] : lines[line].TrimStart();
                    what = $"line {line + 1} indentation changed";
                    break;
                }
            case 4:
                {
                    int line = random.Next(lines.Count);
                    int at = random.Next(lines[line].Length + 1);
                    string fragment = YamlFragments[random.Next(YamlFragments.Length)];
                    lines[line] = lines[line].Insert(at, fragment);
                    what = $"line {line + 1} got {fragment} at {at}";
                    break;
                }
            default:
                {
                    string joined = string.Join('\n', lines);
                    int length = random.Next(joined.Length);
                    lines = [joined[..length]];
                    what = $"truncated to {length} characters";
                    break;
                }
        }
        string path = Path.Combine(folder, "recipe.yaml");
        File.WriteAllText(path, string.Join('\n', lines));
        return (what, () => Recipe.Load(path));
    }
}
