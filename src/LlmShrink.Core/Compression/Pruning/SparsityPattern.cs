using System.Globalization;

namespace LlmShrink.Compression.Pruning;

/// <summary>
/// Which weights of a linear layer W [out, in] compete when pruning: unstructured (any weights of a row, or of the
/// block, depending on the method), or N:M — N weights kept out of every M consecutive input columns of a row. 2:4 and
/// 4:8 are the patterns sparse tensor cores run faster (Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks");
/// an N:M layer's sparsity is fixed by the pattern, 1 − N/M.
/// </summary>
public sealed record SparsityPattern
{
    /// <summary>Largest M: a group is selected in a buffer on the stack.</summary>
    public const int MaxGroup = 32;

    /// <summary>Weights kept in every group of <see cref="M"/> consecutive inputs of a row; 0 when unstructured.</summary>
    public int N { get; }
    /// <summary>Consecutive inputs per group; 0 when unstructured.</summary>
    public int M { get; }

    SparsityPattern(int n, int m)
    {
        N = n;
        M = m;
    }

    public static SparsityPattern Unstructured { get; } = new(0, 0);

    public static SparsityPattern NOfM(int n, int m)
    {
        if (!(n >= 1 && n < m && m <= MaxGroup))
            throw new ShrinkException($"sparsity pattern {n}:{m}: needs 1 ≤ N < M ≤ {MaxGroup} (N weights kept of every M)");
        return new SparsityPattern(n, m);
    }

    public bool IsNOfM => M > 0;

    /// <summary>1 − N/M for an N:M pattern; null when unstructured (the sparsity is then a free parameter).</summary>
    public double? ImpliedSparsity => IsNOfM ? 1 - (double)N / M : null;

    /// <summary>"unstructured" or "N:M" (e.g. "2:4"), the form <see cref="ToString"/> writes.</summary>
    public static SparsityPattern Parse(string text)
    {
        if (text == "unstructured") return Unstructured;
        var parts = text.Split(':');
        if (parts.Length == 2 &&
            int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int n) &&
            int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int m))
            return NOfM(n, m);
        throw new ShrinkException($"sparsity pattern '{text}': expected 'unstructured' or N:M such as 2:4");
    }

    public override string ToString() => IsNOfM ? $"{N}:{M}" : "unstructured";

    /// <summary>
    /// The fraction of weights to prune from a layer with <paramref name="columns"/> inputs: <paramref name="sparsity"/>,
    /// required for unstructured pruning; for N:M it may be left out and, if given, must be 1 − N/M. Groups must tile
    /// the rows, so N:M needs columns to be a multiple of M.
    /// </summary>
    internal double Resolve(double? sparsity, int columns, string method)
    {
        if (IsNOfM)
        {
            if (columns % M != 0)
                throw new ShrinkException($"{method}: {this} needs the input count to be a multiple of {M}, not {columns}");
            double implied = ImpliedSparsity!.Value;
            if (sparsity is double s && Math.Abs(s - implied) > 1e-9)
                throw new ShrinkException($"{method}: {this} prunes {implied:0.###} of the weights, not {s}");
            return implied;
        }
        if (sparsity is not double fraction)
            throw new ShrinkException($"{method}: unstructured pruning needs a sparsity");
        if (!(fraction >= 0 && fraction < 1))
            throw new ShrinkException($"{method}: sparsity must be in [0, 1), not {fraction}");
        return fraction;
    }
}
