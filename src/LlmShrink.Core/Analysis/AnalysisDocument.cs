using System.Text.Json;
using System.Text.Json.Serialization;
using LlmShrink.Model;

namespace LlmShrink.Analysis;

/// <summary>The analyzed model: where it came from and its shape.</summary>
public sealed record AnalyzedModel(string Source, string Architecture, int Layers, int HiddenSize, int IntermediateSize, int Heads, int KvHeads,
    int HeadDim, int VocabSize, long BytesOnDisk);

/// <summary>
/// The calibration: <paramref name="Samples"/> × <paramref name="SequenceLength"/> tokens drawn as <c>compress</c> draws
/// them (or random ids), and the held-back windows the KL is measured on (text no sample covers).
/// </summary>
public sealed record AnalyzedCalibration(string Source, int Samples, int SequenceLength, int Seed, long Tokens, int HeldBackWindows, long HeldBackTokens);

/// <summary>Everything measured about one block linear W [Rows, Columns].</summary>
/// <param name="Type">Its module name (q_proj … down_proj): the layer type.</param>
/// <param name="BreakEvenRank">mn/(m + n): factors of a lower rank store fewer values than W.</param>
/// <param name="HalfParameterRank">⌊mn/(2(m + n))⌋: the rank of the half-rank method.</param>
/// <param name="Whitened">Spectrum of W·L, LLᵀ = XXᵀ/N + dampening (<see cref="SpectrumAnalysis.Whitened"/>).</param>
/// <param name="WhiteningDampening">The relative dampening λ/mean(diag XXᵀ) the Cholesky factorization took.</param>
/// <param name="Sensitivity">By method id; empty when no method was measured.</param>
public sealed record MatrixAnalysis(string Module, int Layer, string Type, int Rows, int Columns, double BreakEvenRank, int HalfParameterRank,
    Spectrum Raw, Spectrum Whitened, double WhiteningDampening, IReadOnlyDictionary<string, LayerSensitivity> Sensitivity);

/// <param name="BlockInfluence">ShortGPT's BI = 1 − mean cos(input, output) over the calibration tokens.</param>
/// <param name="SensitivityIndex">The block's measured sensitivity relative to the average block (<see cref="LayerSensitivity.BlockIndex"/>).</param>
public sealed record BlockAnalysis(int Layer, double BlockInfluence, double SensitivityIndex);

/// <summary>How the run went: wall time, where it went, peak memory.</summary>
/// <param name="SpectraSeconds">Raw and whitened spectra (and the outlier statistics) of every matrix.</param>
/// <param name="MeasurementSeconds">The streaming pass: calibration statistics, every method's trial on every layer and its KL (spectra included).</param>
public sealed record AnalysisRun(DateTime StartedUtc, double Seconds, double SpectraSeconds, double MeasurementSeconds, long PeakWorkingSetBytes, int Threads, int ProcessorCount);

/// <summary>
/// analysis.json: every number <c>llmshrink analyze</c> measured (see docs/FORMAT.md, "analysis.json"). The report and
/// charts are drawn from this document alone, and the planner can read it back (<see cref="Load"/>).
/// </summary>
public sealed record AnalysisDocument(string Format, int Version, AnalyzedModel Model, AnalyzedCalibration Calibration,
    IReadOnlyList<SensitivityMethod> Methods, IReadOnlyList<MatrixAnalysis> Matrices, IReadOnlyList<SiteOutliers> Sites,
    IReadOnlyList<BlockAnalysis> Blocks, IReadOnlyList<string> Summary, AnalysisRun Run)
{
    public const string FormatName = "llmshrink-analysis";
    public const int CurrentVersion = 1;

    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DictionaryKeyPolicy = null, // method ids stay as written
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    /// <summary>The layer types in block order (q_proj … down_proj).</summary>
    public static IReadOnlyList<string> Types { get; } = [.. LinearRoles.All.Select(LinearRoles.ModuleName)];

    public void Save(string path) => File.WriteAllText(path, JsonSerializer.Serialize(this, Json));

    public static AnalysisDocument Load(string path)
    {
        AnalysisDocument? document;
        try { document = JsonSerializer.Deserialize<AnalysisDocument>(File.ReadAllText(path), Json); }
        catch (JsonException e) { throw ShrinkException.InFile(path, "not a valid analysis.json: " + e.Message); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw ShrinkException.InFile(path, "cannot read: " + e.Message); }
        if (document?.Format != FormatName) throw ShrinkException.InFile(path, $"not an analysis.json (format '{document?.Format}', expected '{FormatName}')");
        if (document.Version != CurrentVersion) throw ShrinkException.InFile(path, $"analysis.json version {document.Version}; this build reads version {CurrentVersion}");
        return document;
    }
}
