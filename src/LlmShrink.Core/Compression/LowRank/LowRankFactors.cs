namespace LlmShrink.Compression.LowRank;

/// <summary>
/// A weight [Rows, Columns] approximated as U·V with U [Rows, Rank] and V [Rank, Columns], both row-major: a layer runs it
/// as two thin matmuls, y = (x·Vᵀ)·Uᵀ, and stores Rank·(Rows + Columns) values instead of Rows·Columns.
/// </summary>
public sealed record LowRankFactors(int Rows, int Columns, float[] U, float[] V)
{
    public int Rank => U.Length / Rows;

    /// <summary>
    /// mn/(m + n): the rank at which the two factors hold as many values as the matrix. A factorization saves parameters
    /// only below it, so a rank at or above it leaves the layer dense.
    /// </summary>
    public static double BreakEvenRank(int rows, int columns) => (double)rows * columns / (rows + columns);

    /// <summary>Whether factors of <paramref name="rank"/> store fewer values than the dense matrix.</summary>
    public static bool Pays(int rank, int rows, int columns) => rank < BreakEvenRank(rows, columns);

    /// <summary>
    /// The largest rank whose factors store at most (1 − ratio)·mn values, i.e. remove at least the fraction
    /// <paramref name="ratio"/> of the matrix's parameters: ⌊(1 − ratio)·mn/(m + n)⌋, at least 1.
    /// </summary>
    public static int RankForRatio(int rows, int columns, double ratio) =>
        Math.Max(1, (int)Math.Floor((1 - ratio) * BreakEvenRank(rows, columns) + 1e-9));
}
