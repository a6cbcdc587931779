using System.Text.Json;

namespace LlmShrink.Planning;

/// <summary>
/// What the planner measured of one candidate for one group: its exact bytes in the output format, its proxy loss
/// (relative output error on calibration inputs, parameter-weighted over the group's layers) and, for the candidates
/// that matter, the end-to-end KL on the held-back text with only this group changed; and, when timed, the group's
/// seconds per generated token (<see cref="IDecodeClock.LayerSeconds"/>).
/// </summary>
public sealed record CandidateMeasurement(long Bytes, double Proxy, double? MeasuredKl, double? Seconds = null);

/// <summary>
/// Every group × candidate measurement of one model, calibration and menu: what <c>--cache</c> keeps. <see cref="Decode"/>
/// is null when nothing was timed (<c>llmshrink analyze</c>).
/// </summary>
public sealed record MeasurementTable(string Key, IReadOnlyList<string> Groups, IReadOnlyList<string> Candidates, CandidateMeasurement[][] Entries,
    long Parameters, double MeasurementSeconds, DecodeTiming? Decode, int Version)
{
    /// <summary>
    /// What a cache file must say to be read: 2 added the decode times. A file of another version is measured again (and
    /// replaced), never read with its missing fields as zeros.
    /// </summary>
    public const int CurrentVersion = 2;

    /// <summary>Bytes of the planned groups under <paramref name="choices"/> (one candidate index per group).</summary>
    public long PlannedBytes(IReadOnlyList<int> choices) => choices.Select((c, g) => Entries[g][c].Bytes).Sum();

    /// <summary>Seconds per generated token of the planned groups under <paramref name="choices"/>.</summary>
    public double PlannedSeconds(IReadOnlyList<int> choices) =>
        choices.Select((c, g) => Entries[g][c].Seconds ?? throw new InvalidOperationException($"{Groups[g]}: {Candidates[c]} was not timed")).Sum();

    /// <summary>
    /// ΔKL predicted for each candidate of group <paramref name="g"/>: the measured KL where there is one, else the proxy
    /// times the group's sensitivity — the least-squares slope through the origin of measured KL against proxy over the
    /// group's measured candidates (ΔKL ≈ s_g · relative output error, one s_g per group: how much of a layer's output
    /// error the rest of the network lets through to the logits).
    /// </summary>
    public double[] PredictedKl(int g)
    {
        double sensitivity = Sensitivity(g);
        return [.. Entries[g].Select(m => m.MeasuredKl ?? sensitivity * m.Proxy)];
    }

    /// <summary>The group's sensitivity s_g (see <see cref="PredictedKl"/>).</summary>
    public double Sensitivity(int g)
    {
        double num = 0, den = 0;
        foreach (var m in Entries[g])
            if (m.MeasuredKl is { } kl && m.Proxy > 0) { num += kl * m.Proxy; den += m.Proxy * m.Proxy; }
        return den > 0 ? num / den : 0;
    }

    private static readonly JsonSerializerOptions Options = new() { WriteIndented = false };

    public void Save(string path)
    {
        string temporary = $"{path}.tmp-{Guid.NewGuid():N}";
        File.WriteAllText(temporary, JsonSerializer.Serialize(this, Options));
        File.Move(temporary, path, overwrite: true);
    }

    /// <summary>
    /// The cached table, or null when there is none for <paramref name="key"/> or it is of another <see cref="CurrentVersion"/>
    /// (a damaged cache file is an error naming it).
    /// </summary>
    public static MeasurementTable? Load(string path, string key)
    {
        if (!File.Exists(path)) return null;
        try
        {
            var table = JsonSerializer.Deserialize<MeasurementTable>(File.ReadAllText(path), Options);
            return table?.Key == key && table.Version == CurrentVersion ? table : null;
        }
        catch (JsonException e) { throw ShrinkException.InFile(path, "damaged measurement cache: " + e.Message + " (delete it to measure again)"); }
    }
}
