using System.Buffers.Binary;
using System.Text;
using LlmShrink.Formats;
using LlmShrink.Formats.Safetensors;
using LlmShrink.Model;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>
/// Bounded mutation fuzzing of every model format: truncations, bit flips, huge counts and offsets written over
/// header fields. Each mutated input must end in a valid load or a <see cref="ShrinkException"/> — never another
/// exception, a hang, or a huge allocation. Seeds are fixed, so a failure reproduces.
/// </summary>
public class FuzzTests
{
    private const long AllocationLimit = 256L << 20; // a load may allocate its tables, never gigabytes
    private static readonly TimeSpan CaseTimeout = TimeSpan.FromSeconds(20);

    [Fact]
    public void GgufMutationsLoadOrFailCleanly()
    {
        byte[] original = File.ReadAllBytes(SharedData.Stories260K);
        // Metadata and tensor infos sit before the first tensor; most mutations aim there, some anywhere.
        int headerEnd = HeaderExtentGuess(original);
        Fuzz("model.gguf", original, headerEnd, cases: 1500, seed: 1);
    }

    [Fact]
    public void SafetensorsFolderMutationsLoadOrFailCleanly()
    {
        using var source = new TempDir();
        WriteTinyHfFolder(source.Path);
        foreach (var (file, seed) in new[] { ("model.safetensors", 2), ("config.json", 3), ("tokenizer.model", 4) })
        {
            byte[] original = File.ReadAllBytes(Path.Combine(source.Path, file));
            int headerEnd = file == "model.safetensors" ? 8 + (int)BinaryPrimitives.ReadUInt64LittleEndian(original) : original.Length;
            Fuzz(file, original, headerEnd, cases: file == "model.safetensors" ? 800 : 400, seed, companions: source.Path);
        }
    }

    [Fact]
    public void Llama2cMutationsLoadOrFailCleanly()
    {
        using var source = new TempDir();
        WriteTinyLlama2c(source.File("model.bin"), source.File("tokenizer.bin"));
        Fuzz("model.bin", File.ReadAllBytes(source.File("model.bin")), headerEnd: 28, cases: 300, seed: 5, companions: source.Path);
        Fuzz("tokenizer.bin", File.ReadAllBytes(source.File("tokenizer.bin")), headerEnd: 64, cases: 300, seed: 6, companions: source.Path);
    }

    /// <summary>
    /// Writes <paramref name="cases"/> mutations of <paramref name="original"/> as <paramref name="fileName"/> (beside copies
    /// of the other files in <paramref name="companions"/>) and loads each through <see cref="ModelLoader"/>.
    /// </summary>
    private static void Fuzz(string fileName, byte[] original, int headerEnd, int cases, int seed, string? companions = null)
    {
        var random = new Random(seed);
        var failures = new List<string>();
        using var dir = new TempDir();
        if (companions is not null)
            foreach (var f in Directory.GetFiles(companions)) File.Copy(f, Path.Combine(dir.Path, Path.GetFileName(f)));
        string path = Path.Combine(dir.Path, fileName);
        string modelArg = fileName switch { "model.gguf" => path, "model.bin" or "tokenizer.bin" => Path.Combine(dir.Path, "model.bin"), _ => dir.Path };

        for (int i = 0; i < cases && failures.Count < 5; i++)
        {
            var (bytes, what) = Mutate(original, headerEnd, random);
            File.WriteAllBytes(path, bytes);
            string? failure = LoadOnce(modelArg);
            if (failure is not null) failures.Add($"case {i} ({what}): {failure}");
        }
        Assert.True(failures.Count == 0, $"{fileName}, seed {seed}:\n" + string.Join("\n", failures));
    }

    /// <summary>Loads the model and touches every tensor's first and last row; returns a description of what went wrong, or null.</summary>
    private static string? LoadOnce(string modelArg)
    {
        bool answered = HangGuard.TryRun(() =>
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            try
            {
                using var model = ModelLoader.Load(modelArg);
                var row = new float[64 << 10];
                foreach (var t in model.Weights.All)
                {
                    if (t.Rows == 0 || t.Columns > row.Length) continue;
                    t.DequantizeRow(0, row);
                    t.DequantizeRow(t.Rows - 1, row);
                }
                model.Tokenizer?.Decode(model.Tokenizer.Encode("Once upon a time, 42 € 😀", addBos: true));
            }
            catch (ShrinkException e)
            {
                if (e.Message.Contains('\n')) return "error message spans several lines: " + e.Message;
            }
            catch (Exception e) { return e.GetType().Name + ": " + e.Message; }
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            return allocated > AllocationLimit ? $"allocated {allocated >> 20} MB" : null;
        }, CaseTimeout, out string? failure);
        return answered ? failure : HangGuard.Hang(CaseTimeout);
    }

    private static (byte[] Bytes, string What) Mutate(byte[] original, int headerEnd, Random random)
    {
        var bytes = (byte[])original.Clone();
        int Position() => random.Next(4) == 0 ? random.Next(bytes.Length) : random.Next(Math.Min(headerEnd, bytes.Length));
        switch (random.Next(5))
        {
            case 0:
                {
                    int length = random.Next(2) == 0 ? random.Next(Math.Min(headerEnd + 64, bytes.Length)) : random.Next(bytes.Length);
                    return (bytes[..length], $"truncated to {length}");
                }
            case 1:
                {
                    int flips = 1 + random.Next(8);
                    for (int k = 0; k < flips; k++) bytes[Position()] ^= (byte)(1 << random.Next(8));
                    return (bytes, $"{flips} bit flips");
                }
            case 2:
                {
                    // A count, length or offset field overwritten with an extreme value.
                    ulong[] extremes = [ulong.MaxValue, long.MaxValue, uint.MaxValue, int.MaxValue, 1UL << 32, 1UL << 40, (ulong)original.Length, 0];
                    int at = Math.Min(Position(), bytes.Length - 8);
                    ulong value = extremes[random.Next(extremes.Length)];
                    BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(at), value);
                    return (bytes, $"u64 {value} at {at}");
                }
            case 3:
                {
                    int at = Math.Min(Position(), bytes.Length - 4);
                    uint value = (uint)random.Next() * (uint)(1 + random.Next(3));
                    BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(at), value);
                    return (bytes, $"u32 {value} at {at}");
                }
            default:
                {
                    // A block of the header copied over another place: overlapping or duplicated entries.
                    int from = Position(), to = Position(), length = Math.Min(1 + random.Next(64), Math.Min(bytes.Length - from, bytes.Length - to));
                    Array.Copy(original, from, bytes, to, length);
                    return (bytes, $"{length} bytes copied from {from} to {to}");
                }
        }
    }

    /// <summary>Where tensor data starts in a GGUF file: the smallest tensor offset is not needed exactly, only a bias for mutations.</summary>
    private static int HeaderExtentGuess(byte[] gguf)
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        return (int)model.Weights.All.Min(t => t.Offset);
    }

    private static void WriteTinyHfFolder(string dir)
    {
        File.WriteAllText(Path.Combine(dir, "config.json"), """
            {"model_type": "llama", "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 4096, "tie_word_embeddings": true,
             "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2}
            """);
        var config = HfConfig.Parse(Path.Combine(dir, "config.json"));
        var shapes = new List<(string Name, long[] Shape)> { (TensorNames.Embedding, [config.VocabSize, config.HiddenSize]), (TensorNames.FinalNorm, [config.HiddenSize]) };
        for (int i = 0; i < config.NumLayers; i++)
        {
            shapes.Add((TensorNames.Layer(i, TensorNames.AttnNorm), [config.HiddenSize]));
            shapes.Add((TensorNames.Layer(i, TensorNames.Q), [config.QDim, config.HiddenSize]));
            shapes.Add((TensorNames.Layer(i, TensorNames.K), [config.KvDim, config.HiddenSize]));
            shapes.Add((TensorNames.Layer(i, TensorNames.V), [config.KvDim, config.HiddenSize]));
            shapes.Add((TensorNames.Layer(i, TensorNames.O), [config.HiddenSize, config.QDim]));
            shapes.Add((TensorNames.Layer(i, TensorNames.FfnNorm), [config.HiddenSize]));
            shapes.Add((TensorNames.Layer(i, TensorNames.Gate), [config.IntermediateSize, config.HiddenSize]));
            shapes.Add((TensorNames.Layer(i, TensorNames.Up), [config.IntermediateSize, config.HiddenSize]));
            shapes.Add((TensorNames.Layer(i, TensorNames.Down), [config.HiddenSize, config.IntermediateSize]));
        }
        // Alternate dtypes so every decoder is on the fuzzed path.
        TensorType[] types = [TensorType.F32, TensorType.F16, TensorType.BF16];
        var entries = shapes.Select((s, k) => new SafetensorsWriter.Entry(s.Name, types[k % types.Length], s.Shape, stream =>
            stream.Write(new byte[TensorTypes.ByteCount(types[k % types.Length], s.Shape.Aggregate(1L, (a, b) => a * b))]))).ToList();
        SafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), entries);
        File.Copy(Path.Combine(SharedData.TinyLit, "tokenizer.model"), Path.Combine(dir, "tokenizer.model"));
    }

    private static void WriteTinyLlama2c(string modelPath, string tokenizerPath)
    {
        const int dim = 16, hidden = 24, layers = 2, heads = 4, kvHeads = 2, vocab = 300, seqLen = 8;
        const int headSize = dim / heads, kvDim = kvHeads * headSize;
        long floats = (long)vocab * dim + layers * dim * 2 + layers * dim * dim * 2 + layers * kvDim * dim * 2
            + layers * hidden * dim * 3 + dim + seqLen * headSize;
        using (var stream = File.Create(modelPath))
        {
            Span<byte> field = stackalloc byte[4];
            foreach (int h in new[] { dim, hidden, layers, heads, kvHeads, vocab, seqLen })
            {
                BinaryPrimitives.WriteInt32LittleEndian(field, h);
                stream.Write(field);
            }
            stream.Write(new byte[floats * 4]);
        }
        // llama2.c's vocabulary shape: <unk>, <s>, </s>, 256 byte tokens, then a few pieces.
        var pieces = new List<string> { "<unk>", "\n<s>\n", "\n</s>\n" };
        for (int b = 0; b < 256; b++) pieces.Add($"<0x{b:X2}>");
        string[] words = [" ", "e", "t", "a", "o", "n", " t", "th", " th", "he", " the", "in", "an", "on", "at", " a", " o", "er", "re", " w", " s", "ce", "Once", " upon", " time", "up", "ti", "me", "On", "nce", "po", "im", "u", "p", "i", "m", "c", "O", ",", "4"];
        pieces.AddRange(words.Take(vocab - pieces.Count));
        using (var stream = File.Create(tokenizerPath))
        using (var writer = new BinaryWriter(stream))
        {
            writer.Write(16);
            for (int k = 0; k < pieces.Count; k++)
            {
                byte[] utf8 = Encoding.UTF8.GetBytes(pieces[k]);
                writer.Write(k < 259 ? 0f : -(float)k);
                writer.Write(utf8.Length);
                writer.Write(utf8);
            }
        }
    }
}
