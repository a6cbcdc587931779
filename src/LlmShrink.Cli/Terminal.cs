using System.Text.Json;
using System.Text.Json.Serialization;
using LlmShrink.Compression;
using LlmShrink.Model;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace LlmShrink.Cli;

/// <summary>
/// Where output goes. Results go to stdout (a table, or JSON for scripts); progress bars and timings go to stderr
/// so that stdout stays machine-readable. Consoles are created per call so tests can redirect Console.Out/Error.
/// </summary>
internal static class Terminal
{
    public static IAnsiConsole Stdout() => AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Out) });
    public static IAnsiConsole Stderr() => AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DictionaryKeyPolicy = null,
        Converters = { new JsonStringEnumConverter() },
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>One JSON object on stdout.</summary>
    public static void WriteJson(object value) => Console.Out.WriteLine(JsonSerializer.Serialize(value, value.GetType(), JsonOptions));

    /// <summary>A two-column key/value table.</summary>
    public static Table KeyValueTable(string title) =>
        new Table().Title(title).AddColumn("").AddColumn(new TableColumn("").RightAligned()).HideHeaders();

    /// <summary>Adds a row of plain text (Spectre's string overload would read "[...]" as markup).</summary>
    public static Table AddText(this Table table, params string[] cells) =>
        table.AddRow(cells.Select(c => (IRenderable)new Text(c)).ToArray());

    /// <summary>
    /// Runs <paramref name="work"/>, which reports progress through its argument (absolute value out of
    /// <paramref name="total"/>), with a progress bar on stderr when stderr is a terminal.
    /// </summary>
    public static T WithProgress<T>(string description, double total, Func<Action<double>, T> work)
    {
        if (Console.IsErrorRedirected) return work(_ => { });
        return Stderr().Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(context =>
            {
                var task = context.AddTask(description, maxValue: total);
                return work(value => task.Value = value);
            });
    }

    /// <summary>
    /// For a long job whose stderr is a file rather than a terminal (no bar to draw): one line per new stage, with the
    /// time since the job started, so the log shows where the time went. Null when stderr is a terminal.
    /// </summary>
    public static IProgress<PipelineProgress>? StageLines()
    {
        if (!Console.IsErrorRedirected) return null;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        (int Layer, string Stage)? last = null;
        return new SynchronousProgress<PipelineProgress>(p =>
        {
            if (last == (p.Layer, p.Stage)) return;
            last = (p.Layer, p.Stage);
            Console.Error.WriteLine($"{clock.Elapsed.TotalSeconds,8:F1} s  block {p.Layer + 1}/{p.Layers}: {p.Stage}");
        });
    }

    /// <summary>
    /// <see cref="ModelLoader.Load"/>, with one progress bar per downloaded file (bytes, rate, time left) on stderr when the
    /// model comes from the Hugging Face Hub and stderr is a terminal.
    /// </summary>
    public static LoadedModel LoadModel(string model, CancellationToken cancellation, string? tokenizerPath = null)
    {
        if (Console.IsErrorRedirected || !ModelLoader.IsHubId(model, out _)) return ModelLoader.Load(model, tokenizerPath, cancellation);
        return Stderr().Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new DownloadedColumn(), new TransferSpeedColumn(), new RemainingTimeColumn())
            .Start(context =>
            {
                var bars = new Dictionary<string, ProgressTask>(StringComparer.Ordinal);
                var progress = new SynchronousProgress<(string File, long Done, long Total)>(report =>
                {
                    lock (bars)
                    {
                        if (!bars.TryGetValue(report.File, out var bar))
                            bars[report.File] = bar = context.AddTask(Markup.Escape(report.File), maxValue: Math.Max(report.Total, 1));
                        bar.IsIndeterminate = report.Total < 0;
                        bar.Value = report.Done;
                    }
                });
                return ModelLoader.Load(model, tokenizerPath, cancellation, progress);
            });
    }

    /// <summary>Calls its action on the reporting thread (Progress&lt;T&gt; would post to the thread pool, out of order).</summary>
    internal sealed class SynchronousProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }

    /// <summary>
    /// Like <see cref="WithProgress{T}"/> for work in stages run one after the other, each with its own bar (and ETA) out of
    /// 1; <paramref name="work"/> reports (stage, fraction done). A stage that never reports keeps an empty bar.
    /// </summary>
    public static T WithStages<T>(IReadOnlyList<string> stages, Func<Action<int, double>, T> work)
    {
        if (Console.IsErrorRedirected) return work((_, _) => { });
        return Stderr().Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(context =>
            {
                var tasks = stages.Select(s => context.AddTask(s, autoStart: false, maxValue: 1)).ToArray();
                return work((stage, done) =>
                {
                    for (int i = 0; i < stage; i++) tasks[i].Value = 1;
                    if (!tasks[stage].IsStarted) tasks[stage].StartTask();
                    tasks[stage].Value = done;
                });
            });
    }

    public static string Bytes(long bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (double)(1L << 30):F2} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):F2} MiB",
        >= 1L << 10 => $"{bytes / 1024.0:F1} KiB",
        _ => $"{bytes} B",
    };

    public static string Count(double value) => value switch
    {
        >= 1e12 => $"{value / 1e12:F2} T",
        >= 1e9 => $"{value / 1e9:F2} G",
        >= 1e6 => $"{value / 1e6:F2} M",
        >= 1e3 => $"{value / 1e3:F2} K",
        _ => $"{value:F0}",
    };
}
