using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using LlmShrink.Compression;
using LlmShrink.Compression.Recipes;
using LlmShrink.Formats;
using LlmShrink.Model;

namespace LlmShrink.Planning;

/// <summary>What <c>llmshrink auto</c> was asked: the model, calibration drawn as <c>compress</c> draws it, exactly one budget, the menu.</summary>
public sealed record AutoRequest(string Model, string CalibrationFile, string Output)
{
    public int Samples { get; init; } = 128;
    public int SequenceLength { get; init; } = 256;
    public int Seed { get; init; }
    /// <summary>Bits per weight of the planned layers as written (every tensor they store, header entries included).</summary>
    public double? TargetBitsPerWeight { get; init; }
    /// <summary>Bytes of the written safetensors files.</summary>
    public long? TargetSize { get; init; }
    /// <summary>Mean KL per token to the original on the held-back calibration text.</summary>
    public double? MaxKl { get; init; }
    /// <summary>Generation speed of the written model on this machine, tokens per second.</summary>
    public double? MinTokensPerSecond { get; init; }
    /// <summary>Time every candidate's layers even without a speed budget, so that a later <c>--min-tokens-per-s</c> reads them from the cache.</summary>
    public bool TimeLayers { get; init; }
    public string? CandidatesFile { get; init; }
    public string? CacheFolder { get; init; }
    /// <summary>An <c>llmshrink analyze</c> analysis.json of the same model and calibration whose ΔKLs the planner reuses (<see cref="AnalysisPrior"/>).</summary>
    public string? AnalysisFile { get; init; }
    /// <summary>Held-back windows (of <see cref="SequenceLength"/> tokens) the KL is measured on.</summary>
    public int KlSamples { get; init; } = 8;
    /// <summary>Candidates per group whose end-to-end KL is measured.</summary>
    public int Anchors { get; init; } = 4;
    public int Threads { get; init; }
    public PlanFormat Format { get; init; } = PlanFormat.Folder;
    /// <summary>
    /// GGUF: the type of the token embeddings (llama.cpp's mixes give them the mix's base type), or null to plan it with
    /// the layers (<see cref="EmbeddingPlan"/>; under --target-size or --max-kl, the budgets that count its bytes).
    /// </summary>
    public TensorType? EmbeddingType { get; init; } = TensorType.Q4_K;
}

/// <summary>What <c>auto</c> writes: a Hugging Face folder (GPTQ layout), or a folder holding a GGUF file for llama.cpp.</summary>
public enum PlanFormat { Folder, Gguf }

/// <summary>One applied plan: what the solver predicted and what the written model measured.</summary>
/// <param name="Selection">The solver's plan; its cost is bytes, or nanoseconds per token under <c>--min-tokens-per-s</c>.</param>
/// <param name="PlannedBytes">The planned groups' priced bytes.</param>
/// <param name="PredictedTokensPerSecond">Generation speed by the time model (<see cref="DecodeTiming"/>); null when layers were not timed (no speed target).</param>
/// <param name="MeasuredTokensPerSecond">The written model's generation speed on this machine.</param>
/// <param name="MeetsBudget">Whether the written model met the budget as measured (a bits-per-weight budget, priced exactly, always is).</param>
/// <param name="Embedding">GGUF: the token embeddings' type and bytes (null for a folder).</param>
public sealed record PlanAttempt(Selection Selection, long PlannedBytes, double? PredictedTokensPerSecond, long TotalBytes, double MeasuredKl,
    double MeasuredTokensPerSecond, bool MeetsBudget, EmbeddingOption? Embedding);

/// <param name="Embeddings">GGUF: the embedding types the plan chose from, with their measured KL when it planned them (one, unmeasured, when given).</param>
/// <param name="FromAnalysis">(group, candidate) ΔKLs read from <c>--analysis</c> instead of measured.</param>
public sealed record AutoSummary(MeasurementTable Table, IReadOnlyList<LayerGroup> Groups, IReadOnlyList<Candidate> Candidates, Recipe Plan,
    IReadOnlyList<PlanAttempt> Attempts, PlanAttempt Chosen, bool FromCache, int HeldBackTokens, TimeSpan Elapsed, IReadOnlyList<EmbeddingOption>? Embeddings,
    int FromAnalysis = 0)
{
    public double BitsPerWeight => Chosen.PlannedBytes * 8.0 / Table.Parameters;

    /// <summary>The time model of the measurement: layers are timed only for <c>--min-tokens-per-s</c> (null otherwise).</summary>
    public DecodeTiming? Decode => Table.Decode;
}

/// <summary>
/// <c>llmshrink auto</c>: measure (or read from the cache) every candidate on every group, solve for the budget on the
/// Pareto front, write the plan as a recipe and apply it with the compression pipeline — the same run
/// <c>llmshrink compress --recipe plan.yaml</c> makes — then measure what was written and close the loop: a size over
/// budget (header bytes the prices could not know) lowers the budget by the excess; a KL over <c>--max-kl</c> rescales
/// the predictions by measured / predicted and asks for less loss; a generation speed below <c>--min-tokens-per-s</c>
/// scales the time budget by measured / predicted speed. At most <see cref="MaxAttempts"/> plans are written; the best
/// one that meets the budget is kept, with plan.md explaining it. Every written plan's speed is measured, whatever the
/// budget, so plan.md always says what the plan costs in time as well as in bytes.
/// </summary>
public static class AutoCompressionJob
{
    public const int MaxAttempts = 4;

    /// <param name="decodeClock">Where decode times come from; null: measured on this machine (<see cref="StopwatchDecodeClock"/>).</param>
    public static AutoSummary Run(AutoRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancel = default, IDecodeClock? decodeClock = null)
    {
        var clock = Stopwatch.StartNew();
        decodeClock ??= new StopwatchDecodeClock(request.Threads);
        CheckBudget(request);
        bool gguf = request.Format == PlanFormat.Gguf;
        var candidates = request.CandidatesFile is not null ? CandidateMenu.Load(request.CandidatesFile) : gguf ? CandidateMenu.DefaultGguf : CandidateMenu.Default;
        CalibrationSet.CheckSource(request.CalibrationFile);
        using var model = ModelLoader.Load(request.Model, cancellation: cancel);
        using var output = new OutputFolder(request.Output, model.Weights.Files.Select(f => f.Path).Append(model.Source));
        var (calibration, held) = HeldBackSplit.Draw(request.CalibrationFile, model, request.Samples, request.SequenceLength, request.Seed, request.KlSamples);
        // A folder fuses q/k/v and gate/up (one scheme each) and keeps lm_head as stored, like the presets; a GGUF file
        // types every tensor on its own, lm_head included (llama.cpp's mixes give it Q6_K) — unless it is the embedding
        // table itself (tied), which GGUF stores once, as token_embd, in the embeddings' type.
        var groups = LayerGroup.Of(model.Config, fused: !gguf, head: gguf && !model.Config.TiedEmbeddings);
        IStorageCost cost = gguf ? new GgufStorageCost(model.Config, model.Weights) : FolderStorageCost.Instance;

        using var transformer = new Transformer(model, request.Threads);
        var kl = new HeldBackKl(held, transformer);
        string key = CacheKey(request, model, candidates, held.Length);
        string? cachePath = request.CacheFolder is null ? null : Path.Combine(CacheFolder(request.CacheFolder), $"measurements-{key[..16]}.json");
        // Timing every candidate on every group costs ~30 ms a trial (a minute on tinylit-8m's default menu), so layers are
        // timed only for a speed target; a cache measured without times is measured again for one.
        bool timed = request.TimeLayers || request.MinTokensPerSecond is not null;
        var table = cachePath is null ? null : MeasurementTable.Load(cachePath, key);
        if (timed && table?.Decode is null) table = null;
        bool fromCache = table is not null;
        var prior = request.AnalysisFile is null ? null : AnalysisPrior.Read(request.AnalysisFile, request, model, groups, candidates, held);
        if (table is null)
        {
            table = new SensitivityMeasurement(model, transformer, groups, candidates, cost, request.Anchors) { Clock = timed ? decodeClock : null, Prior = prior }
                .Measure(calibration, held, key, progress, cancel);
            if (cachePath is not null) table.Save(cachePath);
        }

        // GGUF: the embeddings' types to choose from — every planned one measured, or the one given (its KL not measured:
        // a constant does not change the choice).
        var embeddings = !gguf ? null : request.EmbeddingType is { } given ? [EmbeddingPlan.Given(model, given)]
            : EmbeddingPlan.Measure(model, transformer, kl, progress, cancel);

        var timing = table.Decode;
        MultipleChoiceKnapsack Knapsack(Func<CandidateMeasurement, long> price) => new([.. Enumerable.Range(0, groups.Count)
            .Select(g => (IReadOnlyList<Option>)[.. table.Entries[g].Zip(table.PredictedKl(g), (m, loss) => new Option(price(m), loss))])]);
        // Bytes price every plan (and plan.md's front); under --min-tokens-per-s a second knapsack prices time instead.
        var knapsack = Knapsack(m => m.Bytes);
        var byTime = request.MinTokensPerSecond is null ? null : Knapsack(m => DecodeTiming.Nanoseconds(m.Seconds!.Value));
        // Rounded down: a plan within the budget in nanoseconds is then within it in seconds too.
        long timeBudget = request.MinTokensPerSecond is { } speed ? (long)Math.Floor(timing!.PlannedBudget(speed) * 1e9) : 0;
        // The most the planned layers can take: as stored (folder), or every group's dearest candidate (GGUF has no "keep").
        long ceiling = gguf ? knapsack.Front[^1].Cost : groups.Sum(g => g.Roles.Sum(r => cost.KeptBytes(model.Weights, g.Layer, r)));
        // What no plan changes — norms, headers, tokenizer, a folder's embeddings — first estimated, then read off each written file.
        long fixedBytes = gguf ? 1 << 16 : model.BytesOnDisk - ceiling;
        long cheapest = knapsack.Front[0].Cost;
        long Budget() => request.TargetSize is { } size ? size - fixedBytes
            : request.TargetBitsPerWeight is { } bpw ? (long)Math.Floor(bpw * table.Parameters / 8) : long.MaxValue;
        // A GGUF size budget holds the embeddings too; bits per weight count the planned layers only.
        long Within(EmbeddingOption? e) => request.TargetSize is null ? 0 : e?.Bytes ?? 0;
        long leastEmbedding = embeddings is null ? 0 : Within(embeddings.MinBy(e => e.Bytes)), mostEmbedding = embeddings is null ? 0 : Within(embeddings.MaxBy(e => e.Bytes));
        (Selection Layers, EmbeddingOption? Embedding)? Choose(double allowedLoss)
        {
            if (byTime is not null) return byTime.WithinCost(timeBudget) is { } fast ? (fast, embeddings?[0]) : null;
            if (embeddings is null)
                return (request.MaxKl is null ? knapsack.WithinCost(Budget()) : knapsack.WithinLoss(allowedLoss)) is { } plain ? (plain, null) : null;
            if (request.TargetBitsPerWeight is not null) return knapsack.WithinCost(Budget()) is { } byBits ? (byBits, embeddings[0]) : null;
            var both = request.MaxKl is null ? EmbeddingPlan.WithinCost(knapsack, embeddings, Budget()) : EmbeddingPlan.WithinLoss(knapsack, embeddings, allowedLoss);
            return both is { } b ? (b.Layers, b.Embedding) : null;
        }
        if (byTime is not null) CheckSpeed(request.MinTokensPerSecond!.Value, timing!, byTime, timeBudget, candidates);
        else if (request.MaxKl is null)
        {
            string asked = request.TargetSize is { } s ? $"--target-size {s}" : $"--target-bpw {request.TargetBitsPerWeight}";
            long shown = request.TargetSize is null ? 0 : fixedBytes;
            if (Budget() < cheapest + leastEmbedding)
                throw new ShrinkException($"{asked}: below the smallest plan the menu allows ({Describe(cheapest + leastEmbedding + shown, table.Parameters, cheapest)})");
            if (Budget() >= ceiling + mostEmbedding)
                throw new ShrinkException($"{asked}: at or above {(gguf ? "the largest plan the menu allows" : "keeping every layer as stored")} ({Describe(ceiling + mostEmbedding + shown, table.Parameters, ceiling)}); nothing to trade off");
        }

        var attempts = new List<(PlanAttempt Attempt, string Folder, Recipe Plan)>();
        double allowedLoss = request.MaxKl ?? double.PositiveInfinity;
        for (int k = 0; k < MaxAttempts; k++)
        {
            if (Choose(allowedLoss) is not var (selection, embedding)) break;
            if (attempts.Any(a => a.Attempt.Selection.Choices.SequenceEqual(selection.Choices) && a.Attempt.Embedding == embedding)) break; // nothing new to try
            var plan = PlanRecipe(selection, groups, candidates, Path.GetFileName(Path.GetFullPath(request.Output)));
            string folder = Path.Combine(output.Path, $"attempt-{k + 1}");
            progress?.Report(new PipelineProgress(0, model.Config.NumLayers, $"applying plan {k + 1}"));
            var attempt = Apply(request, plan, selection, embedding, table, folder, kl, decodeClock, progress, cancel);
            attempts.Add((attempt, folder, plan));
            fixedBytes = attempt.TotalBytes - attempt.PlannedBytes - Within(embedding);

            if (byTime is not null)
            {
                if (attempt.MeetsBudget) break;
                // The time model was optimistic by measured / predicted speed (layers timed alone keep their weights in
                // the cache more than generation does): ask the solver for that much less time than this plan took, so
                // the next plan is a faster one.
                timeBudget = (long)(selection.Cost * attempt.MeasuredTokensPerSecond / attempt.PredictedTokensPerSecond!.Value);
            }
            else if (request.MaxKl is { } maxKl)
            {
                if (attempt.MeasuredKl <= maxKl) break;
                // The additive prediction was optimistic by measured / predicted: ask the solver for that much less.
                double predicted = selection.Loss + (embedding?.Kl ?? 0);
                allowedLoss = predicted > 0 ? allowedLoss * predicted / attempt.MeasuredKl * 0.95 : allowedLoss / 2;
            }
            else if (request.TargetSize is { } target && attempt.TotalBytes <= target && Choose(allowedLoss) is var (better, betterEmbedding)
                && better.Cost + Within(betterEmbedding) <= selection.Cost + Within(embedding))
                break; // fits, and the exact fixed bytes leave no room for a better plan
            else if (request.TargetSize is null) break;
        }

        var valid = attempts.Where(a => a.Attempt.MeetsBudget).ToList();
        if (valid.Count == 0)
            throw new ShrinkException(request.MaxKl is { } mk
                ? $"--max-kl {mk}: no plan the menu allows met it on the held-back text (best measured {attempts.Select(a => a.Attempt.MeasuredKl).DefaultIfEmpty(double.NaN).Min():G4}); allow more bits or keep"
                : request.MinTokensPerSecond is { } ms
                ? FormattableString.Invariant($"--min-tokens-per-s {ms}: no plan the menu allows reached it once written (best measured {attempts.Max(a => a.Attempt.MeasuredTokensPerSecond):F1} tokens/s); ask for less speed or offer faster candidates")
                : $"--target-size {request.TargetSize}: no plan fits once written (smallest written {attempts.Min(a => a.Attempt.TotalBytes)} bytes)");
        var chosen = request.MaxKl is null ? valid.MinBy(a => a.Attempt.MeasuredKl) : valid.MinBy(a => a.Attempt.TotalBytes);
        if (gguf)
        {
            File.Move(chosen.Folder + ".gguf", output.File(GgufFileName));
            foreach (var name in new[] { "recipe.yaml", "report.md" }) File.Move(Path.Combine(chosen.Folder, name), output.File(name));
        }
        else foreach (var file in Directory.EnumerateFileSystemEntries(chosen.Folder)) Move(file, Path.Combine(output.Path, Path.GetFileName(file)));
        foreach (var a in attempts)
        {
            if (Directory.Exists(a.Folder)) Directory.Delete(a.Folder, recursive: true);
            File.Delete(a.Folder + ".gguf");
        }
        var summary = new AutoSummary(table, groups, candidates, chosen.Plan, [.. attempts.Select(a => a.Attempt)], chosen.Attempt, fromCache, kl.Tokens, clock.Elapsed, embeddings,
            prior?.Sum(row => row.Count(kl => kl is not null)) ?? 0);
        File.WriteAllText(output.File("plan.md"), PlanReport.Write(request, summary, knapsack));
        ParetoChart.Write(output.File("pareto.png"), request, summary, knapsack);
        output.Commit();
        return summary;
    }

    /// <summary>The GGUF file's name in the output folder of <c>--format gguf</c>.</summary>
    public const string GgufFileName = "model.gguf";

    /// <summary>
    /// Writes one plan exactly as <c>llmshrink compress --recipe plan.yaml</c> would (and, for GGUF, exports it as
    /// <c>llmshrink export --format gguf --type EMBEDDING-TYPE</c> would), then measures its size and held-back KL.
    /// </summary>
    private static PlanAttempt Apply(AutoRequest request, Recipe plan, Selection selection, EmbeddingOption? embedding, MeasurementTable table, string folder, HeldBackKl kl,
        IDecodeClock decodeClock, IProgress<PipelineProgress>? progress, CancellationToken cancel)
    {
        CompressionJob.Run(new CompressionRequest(request.Model, "plan.yaml", request.CalibrationFile, request.Samples, request.SequenceLength, request.Seed, folder, request.Threads),
            plan, progress, cancel);
        string written = folder;
        long total;
        if (request.Format == PlanFormat.Gguf)
        {
            written = folder + ".gguf";
            using (var compressed = ModelLoader.Load(folder))
                Export.GgufExporter.Export(compressed, embedding!.Type, written);
            total = new FileInfo(written).Length;
        }
        else total = Directory.EnumerateFiles(folder, "*.safetensors").Where(f => Path.GetFileName(f) != Export.CompressedCheckpointWriter.ImportanceFile).Sum(f => new FileInfo(f).Length);
        using var model = ModelLoader.Load(written);
        using var run = new Transformer(model, request.Threads);
        double measuredKl = kl.Measure(run, cancel);
        progress?.Report(new PipelineProgress(model.Config.NumLayers - 1, model.Config.NumLayers, "applying: timing generation"));
        double speed = decodeClock.TokensPerSecond(run, cancel);
        bool meets = (request.TargetSize is not { } size || total <= size) && (request.MaxKl is not { } maxKl || measuredKl <= maxKl)
            && (request.MinTokensPerSecond is not { } minSpeed || speed >= minSpeed);
        return new PlanAttempt(selection, table.PlannedBytes(selection.Choices), table.Decode?.PredictedTokensPerSecond(table.PlannedSeconds(selection.Choices)),
            total, measuredKl, speed, meets, embedding);
    }

    /// <summary>
    /// A speed the menu cannot reach even with each group's fastest candidate, or one the model as stored already has
    /// (nothing to trade off), is refused before anything is written.
    /// </summary>
    private static void CheckSpeed(double speed, DecodeTiming timing, MultipleChoiceKnapsack byTime, long timeBudget, IReadOnlyList<Candidate> candidates)
    {
        long fastest = byTime.Front[0].Cost;
        if (timeBudget < fastest)
            throw new ShrinkException(FormattableString.Invariant(
                $"--min-tokens-per-s {speed}: faster than the fastest plan the menu allows ({timing.PredictedTokensPerSecond(fastest / 1e9):F1} tokens/s predicted with each group's fastest candidate; the model as stored measured {timing.FloatTokensPerSecond:F1})"));
        if (byTime.WithinCost(timeBudget)!.Choices.All(c => candidates[c].IsKeep))
            throw new ShrinkException(FormattableString.Invariant(
                $"--min-tokens-per-s {speed}: the model as stored already generates at {timing.FloatTokensPerSecond:F1} tokens/s here; nothing to trade off"));
    }

    private static void CheckBudget(AutoRequest r)
    {
        if (r.EmbeddingType is null && (r.Format != PlanFormat.Gguf || (r.TargetSize is null && r.MaxKl is null)))
            throw new ShrinkException("--embedding-type auto: plans the embeddings of a GGUF file under --target-size or --max-kl, the budgets that count their bytes");
        int given = (r.TargetBitsPerWeight is null ? 0 : 1) + (r.TargetSize is null ? 0 : 1) + (r.MaxKl is null ? 0 : 1);
        // Speed is a budget of its own, not a second constraint: the solver's exact front is over one cost, and a second
        // (bytes and time) would make it a surface in three objectives, far larger and only approximately prunable; on
        // memory-bound generation time follows bytes anyway, and plan.md reports both for every plan.
        if (r.MinTokensPerSecond is not null && given > 0)
            throw new ShrinkException("--min-tokens-per-s: give it alone; the plan's one cost is then time, not beside --target-bpw, --target-size or --max-kl");
        if (r.MinTokensPerSecond is { } speed && !(speed > 0 && double.IsFinite(speed))) throw new ShrinkException($"--min-tokens-per-s: must be a positive number, not {speed}");
        if (r.MinTokensPerSecond is not null) return;
        if (given == 0) throw new ShrinkException("give one budget: --target-bpw B, --target-size BYTES, --max-kl K or --min-tokens-per-s S");
        if (given > 1) throw new ShrinkException("give only one budget: --target-bpw, --target-size and --max-kl contradict each other");
        if (r.TargetBitsPerWeight is { } b && !(b > 0 && b < 32)) throw new ShrinkException($"--target-bpw: must be in (0, 32), not {b}");
        if (r.TargetSize is { } s && s <= 0) throw new ShrinkException($"--target-size: must be positive, not {s}");
        if (r.MaxKl is { } k && !(k > 0 && double.IsFinite(k))) throw new ShrinkException($"--max-kl: must be a positive number, not {k}");
    }

    private static string Describe(long bytes, long parameters, long plannedBytes) =>
        FormattableString.Invariant($"{bytes:N0} bytes, {plannedBytes * 8.0 / parameters:F3} bits per planned weight");

    /// <summary>The plan as a recipe: one modifier per chosen candidate and step, targeting the groups that chose it.</summary>
    public static Recipe PlanRecipe(Selection selection, IReadOnlyList<LayerGroup> groups, IReadOnlyList<Candidate> candidates, string name)
    {
        var specs = new List<ModifierSpec>();
        foreach (var chosen in selection.Choices.Distinct().Order())
        {
            var candidate = candidates[chosen];
            if (candidate.IsKeep) continue;
            var targets = groups.Where((_, g) => selection.Choices[g] == chosen).Select(g => g.Target).ToList();
            specs.AddRange(candidate.Steps.Select(step => step with { Targets = targets, Ignore = [] }));
        }
        if (specs.Count == 0) throw new ShrinkException("the plan keeps every layer as stored; nothing to compress");
        return Recipe.From(name, specs);
    }

    /// <summary>What the measurements depend on: model bytes, calibration text and drawing, held-back windows, menu, anchors, threads.</summary>
    private static string CacheKey(AutoRequest r, LoadedModel model, IReadOnlyList<Candidate> candidates, int heldBack)
    {
        var s = new StringBuilder();
        foreach (var f in model.Weights.Files) s.Append(Path.GetFullPath(f.Path)).Append('|').Append(f.Length).Append('|').Append(File.GetLastWriteTimeUtc(f.Path).Ticks).Append('\n');
        if (r.CalibrationFile == CalibrationSet.RandomSource) s.Append(CalibrationSet.RandomSource).Append('\n');
        else
        {
            var calib = new FileInfo(r.CalibrationFile);
            s.Append(calib.FullName).Append('|').Append(calib.Length).Append('|').Append(calib.LastWriteTimeUtc.Ticks).Append('\n');
        }
        if (r.AnalysisFile is not null)
        {
            var analysis = new FileInfo(r.AnalysisFile);
            s.Append(analysis.FullName).Append('|').Append(analysis.Exists ? analysis.Length : -1).Append('|').Append(analysis.Exists ? analysis.LastWriteTimeUtc.Ticks : 0).Append('\n');
        }
        // Threads too: the decode times depend on them.
        s.Append(FormattableString.Invariant($"{r.Samples}|{r.SequenceLength}|{r.Seed}|{heldBack}|{r.Anchors}|{r.Format}|{r.Threads}\n"));
        foreach (var c in candidates) s.Append(c.Name).Append('\n');
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(s.ToString())));
    }

    private static string CacheFolder(string path)
    {
        if (File.Exists(path)) throw ShrinkException.InFile(path, "--cache must be a folder, not a file");
        Directory.CreateDirectory(path);
        return path;
    }

    private static void Move(string from, string to)
    {
        if (Directory.Exists(from)) Directory.Move(from, to);
        else File.Move(from, to);
    }
}
