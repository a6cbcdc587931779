using System.CommandLine;
using LlmShrink.Evaluation;
using LlmShrink.Model;
using Spectre.Console;

namespace LlmShrink.Cli.Commands;

/// <summary><c>llmshrink inspect MODEL [--json] [--ctx N]</c>: what a checkpoint contains and what it costs to run.</summary>
internal static class InspectCommand
{
    public static Command Create(CancellationToken cancellation = default)
    {
        var model = new Argument<string>("model") { Description = "Hugging Face folder, .gguf file, llama2.c .bin, or org/name[@revision]" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object to stdout instead of tables" };
        var context = new Option<int>("--ctx") { Description = "Context length for the FLOPs-per-token estimate", DefaultValueFactory = _ => 2048 };
        var command = new Command("inspect", "Show a model's format, configuration, parameter counts, storage and cost per token")
        {
            model, json, context,
        };
        command.SetAction(parse =>
        {
            int ctx = parse.GetValue(context);
            if (ctx < 1) throw new ShrinkException($"--ctx: must be at least 1 (got {ctx})");
            using var loaded = Terminal.LoadModel(parse.GetValue(model)!, cancellation);
            var stats = ModelStatistics.Of(loaded);
            if (parse.GetValue(json)) Terminal.WriteJson(ToJson(loaded, stats, ctx));
            else Print(loaded, stats, ctx);
            return 0;
        });
        return command;
    }

    private static object ToJson(LoadedModel model, ModelStatistics stats, int ctx) => new
    {
        source = model.Source,
        format = model.Format,
        config = model.Config,
        parameters = stats.Parameters,
        parameter_groups = stats.Groups.ToDictionary(g => g.Name, g => new { parameters = g.Parameters, bytes = g.Bytes }),
        tensor_types = stats.Types.ToDictionary(t => t.Key.ToString(), t => new { parameters = t.Value.Parameters, tensors = t.Value.Tensors }),
        tensor_count = model.Weights.Count,
        bytes_on_disk = model.BytesOnDisk,
        tensor_bytes = stats.TensorBytes,
        bits_per_weight = stats.BitsPerWeight,
        context = ctx,
        flops_per_token = stats.FlopsPerToken(ctx),
        weight_bytes_per_token = stats.MatmulBytes,
        has_tokenizer = model.Tokenizer is not null,
    };

    private static void Print(LoadedModel model, ModelStatistics stats, int ctx)
    {
        var c = model.Config;
        // A structurally pruned model's blocks differ: each width is listed block by block.
        string Widths(Func<LayerShape, int> width) => c.IsUniform ? $"{width(c.Layer(0))}"
            : string.Join(" ", Enumerable.Range(0, c.NumLayers).Select(l => width(c.Layer(l)))) + " (per layer)";
        var overview = Terminal.KeyValueTable(model.Source)
            .AddText("format", model.Format)
            .AddText("architecture", c.Architecture)
            .AddText("hidden size", $"{c.HiddenSize}")
            .AddText("intermediate size", Widths(s => s.IntermediateSize))
            .AddText("layers", $"{c.NumLayers}")
            .AddText("attention heads", Widths(s => s.Heads))
            .AddText("key/value heads", Widths(s => s.KvHeads))
            .AddText("head dim", $"{c.HeadDim}")
            .AddText("vocabulary", $"{c.VocabSize}")
            .AddText("max positions", $"{c.MaxPositions}")
            .AddText("rms norm eps", $"{c.RmsNormEps:G}")
            .AddText("rope theta", $"{c.RopeTheta:G}")
            .AddText("rope style", $"{c.RopeStyle}")
            .AddText("rope scaling", c.RopeScaling is { } s
                ? $"llama3 factor {s.Factor:G}, low {s.LowFreqFactor:G}, high {s.HighFreqFactor:G}, original {s.OriginalMaxPositions}" : "none")
            .AddText("tied embeddings", $"{c.TiedEmbeddings}")
            .AddText("attention bias", $"{c.AttentionBias}")
            .AddText("q/k norm", $"{c.QkNorm}")
            .AddText("sliding window", c.SlidingWindow?.ToString() ?? "none")
            .AddText("bos / eos", $"{c.BosTokenId} / {c.EosTokenId}")
            .AddText("tokenizer", model.Tokenizer is null ? "none" : "yes");

        var groups = new Table().Title("parameters")
            .AddColumn("group").AddColumn(new TableColumn("parameters").RightAligned())
            .AddColumn(new TableColumn("share").RightAligned()).AddColumn(new TableColumn("bytes").RightAligned());
        foreach (var g in stats.Groups.Where(g => g.Parameters > 0))
            groups.AddText(g.Name, $"{g.Parameters:N0}", $"{100.0 * g.Parameters / stats.Parameters:F1} %", Terminal.Bytes(g.Bytes));
        if (c.TiedEmbeddings || stats.Groups.Single(g => g.Name == "lm_head").Parameters == 0) groups.AddText("lm_head", "tied to embedding", "", "");
        groups.AddText("total", $"{stats.Parameters:N0}", "100 %", Terminal.Bytes(stats.TensorBytes));

        var storage = Terminal.KeyValueTable("storage and cost")
            .AddText("tensor types", string.Join(", ", stats.Types.OrderByDescending(t => t.Value.Parameters)
                .Select(t => $"{t.Key} ({t.Value.Tensors} tensors)")))
            .AddText("bytes on disk", $"{model.BytesOnDisk:N0} ({Terminal.Bytes(model.BytesOnDisk)})")
            .AddText("bits per weight", $"{stats.BitsPerWeight:F3}")
            .AddText($"FLOPs per token at context {ctx}", Terminal.Count(stats.FlopsPerToken(ctx)))
            .AddText("weight bytes per generated token", Terminal.Bytes(stats.MatmulBytes));

        var console = Terminal.Stdout();
        console.Write(overview);
        console.Write(groups);
        console.Write(storage);
    }
}
