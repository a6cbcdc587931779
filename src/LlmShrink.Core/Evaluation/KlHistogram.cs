namespace LlmShrink.Evaluation;

/// <summary>
/// Counts of per-token KL divergences on a log scale, ten bins per decade from 1e−6 to 10 nats, with everything below
/// 1e−6 (including exact zeros) in the first bin and everything above 10 in the last: fixed memory for any text.
/// </summary>
public sealed class KlHistogram
{
    public const int BinsPerDecade = 10;
    public const double Lowest = 1e-6, Highest = 10;
    private static readonly int Bins = (int)Math.Round(Math.Log10(Highest / Lowest) * BinsPerDecade);

    public long[] Counts { get; } = new long[Bins];

    public void Add(double kl)
    {
        int bin = kl <= Lowest ? 0 : (int)Math.Floor(Math.Log10(kl / Lowest) * BinsPerDecade);
        Counts[Math.Clamp(bin, 0, Bins - 1)]++;
    }

    /// <summary>The lower edge of bin <paramref name="bin"/>, in nats.</summary>
    public static double LowerEdge(int bin) => Lowest * Math.Pow(10, bin / (double)BinsPerDecade);
}
