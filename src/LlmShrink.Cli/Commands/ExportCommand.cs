using System.CommandLine;
using System.Globalization;
using LlmShrink.Export;
using LlmShrink.Formats;
using LlmShrink.Model;

namespace LlmShrink.Cli.Commands;

/// <summary>
/// <c>llmshrink export MODEL --format gguf --type T --out FILE.gguf</c> or
/// <c>llmshrink export MODEL --format safetensors --dtype D --out DIR [--max-shard-size 5GB]</c> or
/// <c>llmshrink export COMPRESSED_DIR --format safetensors-gptq|compressed-tensors --out DIR [--max-shard-size 5GB]</c> or, for a folder
/// with a low-rank compensation (eora), its adapter: <c>--format peft-lora --out DIR [--base-model NAME]</c> or
/// <c>--format gguf-lora --out FILE.gguf [--type F16|BF16|F32]</c>.
/// </summary>
public static class ExportCommand
{
    /// <param name="cancellation">Ctrl+C, SIGTERM, SIGHUP: every format stops within a batch of rows and deletes its temporary file or folder.</param>
    public static Command Create(CancellationToken cancellation = default)
    {
        var model = new Argument<string>("model") { Description = "Hugging Face folder, .gguf file, llama2.c .bin, or Hugging Face id" };
        var format = new Option<string>("--format")
        {
            Description = "gguf, safetensors, safetensors-gptq (a compressed folder as a GPTQ v1 checkpoint), compressed-tensors (a compressed folder as llm-compressor's checkpoint for vLLM), or a compressed folder's compensation as an adapter: peft-lora (PEFT folder), gguf-lora (llama.cpp --lora file)",
            Required = true,
        };
        var type = new Option<string?>("--type") { Description = $"GGUF tensor type: {string.Join("|", GgufExporter.Types)}; gguf-lora: {string.Join("|", GgufLoraExporter.Types)} (default: as stored)" };
        var dtype = new Option<string?>("--dtype") { Description = "safetensors dtype: F16|BF16|F32" };
        var output = new Option<string>("--out") { Description = "output .gguf file or folder", Required = true };
        var maxShard = new Option<string?>("--max-shard-size") { Description = "largest safetensors shard, e.g. 5GB, 500MB (default 5GB)" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "tokenizer.bin for a llama2.c checkpoint" };
        var denseType = new Option<string?>("--dense-type") { Description = "GGUF type for matrices a compression left unquantized (embeddings, lm_head); default: --type" };
        var baseModel = new Option<string?>("--base-model") { Description = "peft-lora: adapter_config.json's base_model_name_or_path (default: the model folder's full path)" };

        var command = new Command("export", "write a model as GGUF (llama.cpp), a dense Hugging Face safetensors folder, or a GPTQ or compressed-tensors checkpoint (transformers, vLLM)");
        command.Arguments.Add(model);
        foreach (var option in new Option[] { format, type, dtype, output, maxShard, tokenizer, denseType, baseModel }) command.Options.Add(option);
        command.SetAction(parse =>
        {
            Run(parse.GetValue(model)!, parse.GetValue(format)!, parse.GetValue(type), parse.GetValue(dtype), parse.GetValue(output)!,
                parse.GetValue(maxShard), parse.GetValue(tokenizer), parse.GetValue(denseType), baseModel: parse.GetValue(baseModel), cancellation: cancellation);
            return 0;
        });
        return command;
    }

    public static void Run(string modelPath, string format, string? type, string? dtype, string output, string? maxShardSize, string? tokenizer,
        string? denseType = null, TextWriter? console = null, string? baseModel = null, CancellationToken cancellation = default)
    {
        console ??= Console.Out;
        if (denseType is not null && !format.Equals("gguf", StringComparison.OrdinalIgnoreCase)) throw new ShrinkException("--dense-type applies to --format gguf");
        if (baseModel is not null && !format.Equals("peft-lora", StringComparison.OrdinalIgnoreCase)) throw new ShrinkException("--base-model applies to --format peft-lora");
        switch (format.ToLowerInvariant())
        {
            case "gguf":
                {
                    if (dtype is not null || maxShardSize is not null) throw new ShrinkException("--dtype and --max-shard-size apply to --format safetensors; use --type for gguf");
                    var tensorType = ParseType("--type", type ?? throw new ShrinkException("--format gguf needs --type (" + string.Join("|", GgufExporter.Types) + ")"), GgufExporter.Types);
                    TensorType? dense = denseType is null ? null : ParseType("--dense-type", denseType, GgufExporter.Types);
                    using var model = Terminal.LoadModel(modelPath, cancellation, tokenizer);
                    var mapped = GgufExporter.Export(model, tensorType, output, dense, cancellation);
                    if (mapped is not null) console.WriteLine(MappedLayer.Summary(mapped));
                    NoteAdapterLeftOut(model, console, "--format gguf-lora --out ADAPTER.gguf, and run llama.cpp with --lora ADAPTER.gguf");
                    break;
                }
            case "safetensors":
                {
                    if (type is not null) throw new ShrinkException("--type applies to --format gguf; use --dtype for safetensors");
                    var tensorType = ParseType("--dtype", dtype ?? "F32", SafetensorsExporter.DTypes);
                    long shard = maxShardSize is null ? SafetensorsExporter.DefaultMaxShardBytes : ParseSize(maxShardSize);
                    using var model = Terminal.LoadModel(modelPath, cancellation, tokenizer);
                    SafetensorsExporter.Export(model, tensorType, output, shard, cancellation);
                    break;
                }
            case "safetensors-gptq":
                {
                    if (type is not null || dtype is not null) throw new ShrinkException("--format safetensors-gptq copies the packed tensors as they are; --type and --dtype do not apply");
                    long shard = maxShardSize is null ? SafetensorsExporter.DefaultMaxShardBytes : ParseSize(maxShardSize);
                    using var model = Terminal.LoadModel(modelPath, cancellation, tokenizer);
                    GptqSafetensorsExporter.Export(model, output, shard, cancellation);
                    NoteAdapterLeftOut(model, console, "--format peft-lora --out ADAPTER_DIR --base-model GPTQ_DIR, and load it with PEFT or vLLM on top of this export");
                    break;
                }
            case "compressed-tensors":
                {
                    if (type is not null || dtype is not null) throw new ShrinkException("--format compressed-tensors keeps the compressed integers and scales as they are; --type and --dtype do not apply");
                    long shard = maxShardSize is null ? SafetensorsExporter.DefaultMaxShardBytes : ParseSize(maxShardSize);
                    using var model = Terminal.LoadModel(modelPath, cancellation, tokenizer);
                    foreach (string note in CompressedTensorsExporter.Export(model, output, shard, cancellation)) console.WriteLine(note);
                    NoteAdapterLeftOut(model, console, "--format peft-lora --out ADAPTER_DIR --base-model CT_DIR, and load it with PEFT or vLLM on top of this export");
                    break;
                }
            case "peft-lora":
                {
                    if (type is not null || dtype is not null || maxShardSize is not null) throw new ShrinkException("--format peft-lora copies the factors as stored; --type, --dtype and --max-shard-size do not apply");
                    using var model = Terminal.LoadModel(modelPath, cancellation, tokenizer);
                    PeftLoraExporter.Export(model, output, baseModel, cancellation);
                    break;
                }
            case "gguf-lora":
                {
                    if (dtype is not null || maxShardSize is not null) throw new ShrinkException("--dtype and --max-shard-size do not apply to --format gguf-lora; use --type");
                    TensorType? factorType = type is null ? null : ParseType("--type", type, GgufLoraExporter.Types);
                    using var model = Terminal.LoadModel(modelPath, cancellation, tokenizer);
                    GgufLoraExporter.Export(model, output, factorType, cancellation);
                    break;
                }
            default:
                throw new ShrinkException($"--format {format}: unknown format (supported: gguf, safetensors, safetensors-gptq, compressed-tensors, peft-lora, gguf-lora)");
        }
    }

    /// <summary>Says that the compensated modules went over as their bases, and how to write their adapter.</summary>
    private static void NoteAdapterLeftOut(LoadedModel model, TextWriter console, string how)
    {
        int compensated = CompensationAdapter.Find(model).Count;
        if (compensated > 0)
            console.WriteLine($"note: {compensated} modules are written without their low-rank compensation (EoRA); write it as an adapter with {how}");
    }

    private static TensorType ParseType(string option, string text, TensorType[] allowed)
    {
        foreach (var t in allowed)
            if (string.Equals(t.ToString(), text, StringComparison.OrdinalIgnoreCase)) return t;
        throw new ShrinkException($"{option} {text}: unsupported (supported: {string.Join(", ", allowed)})");
    }

    /// <summary>"5GB", "500MB", "2GiB", "1000000" → bytes (decimal units as transformers' max_shard_size; KiB/MiB/GiB binary).</summary>
    public static long ParseSize(string text)
    {
        string t = text.Trim().ToUpperInvariant();
        (string Suffix, long Scale)[] units =
        [
            ("KIB", 1L << 10), ("MIB", 1L << 20), ("GIB", 1L << 30), ("TIB", 1L << 40),
            ("KB", 1_000), ("MB", 1_000_000), ("GB", 1_000_000_000), ("TB", 1_000_000_000_000), ("B", 1),
        ];
        foreach (var (suffix, scale) in units)
            if (t.EndsWith(suffix, StringComparison.Ordinal))
                return Scaled(t[..^suffix.Length], scale, text);
        return Scaled(t, 1, text);
    }

    private static long Scaled(string number, long scale, string original)
    {
        if (!double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out double value) || !(value > 0) || value * scale > long.MaxValue)
            throw new ShrinkException($"--max-shard-size {original}: not a size (e.g. 5GB, 500MB, 2GiB)");
        return (long)(value * scale);
    }
}
