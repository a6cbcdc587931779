namespace LlmShrink.Compression.Pruning;

/// <summary>
/// Chooses which of a set of scores to prune: exactly the k smallest, whatever the ties. Every pruning method here
/// comes down to this on some comparison group (a row, a group of M inputs, a SparseGPT block), so the count a
/// method promises holds exactly even where many scores are equal (dead inputs all score 0).
/// </summary>
static class ScoreSelection
{
    /// <summary>
    /// keep[i] = false for the <paramref name="k"/> smallest <paramref name="scores"/>, true for the others. Scores
    /// equal to the k-th smallest are pruned in order (lowest index first) until k are.
    /// </summary>
    /// <param name="scratch">At least twice as long as <paramref name="scores"/>; overwritten.</param>
    public static void PruneSmallest(ReadOnlySpan<float> scores, int k, Span<bool> keep, Span<float> scratch)
    {
        if (k == 0)
        {
            keep[..scores.Length].Fill(true);
            return;
        }
        var (threshold, below) = KthSmallest(scores, k - 1, scratch);
        int ties = k - below; // how many scores equal to the threshold are pruned
        for (int i = 0; i < scores.Length; i++)
        {
            bool prune = scores[i] < threshold;
            if (scores[i] == threshold && ties > 0)
            {
                prune = true;
                ties--;
            }
            keep[i] = !prune;
        }
    }

    /// <summary>
    /// The k-th smallest value (0-based) and how many values are smaller, by quickselect: O(n) on average where a sort
    /// would be O(n log n) — a SparseGPT block is rows × 128 scores, ranked once per block. Each round partitions the
    /// candidates around a pivot into the two halves of <paramref name="scratch"/> in turn — the smaller ones from the
    /// front, the larger from the back, the equal ones only counted — writing every value to both ends and advancing the
    /// end it belongs to, so the loop has no data-dependent branch (on random scores, half of them would be mispredicted).
    /// The pivot is one of the candidates, so each round removes at least one, and runs of equal values end the search.
    /// </summary>
    static (float Value, int Below) KthSmallest(ReadOnlySpan<float> values, int k, Span<float> scratch)
    {
        int below = 0; // values already known to be smaller than every remaining candidate
        var candidates = values;
        for (int round = 0; ; round++)
        {
            int n = candidates.Length;
            float pivot = MedianOfThree(candidates[0], candidates[n / 2], candidates[n - 1]);
            var into = scratch.Slice(round % 2 * values.Length, n); // never the half the candidates are read from
            int lt = 0, gt = n - 1;
            foreach (float x in candidates)
            {
                into[lt] = x;
                into[gt] = x;
                lt += x < pivot ? 1 : 0;
                gt -= x > pivot ? 1 : 0;
            }
            int notGreater = gt + 1; // into[0..lt) < pivot, lt..gt equal to it (not written), into(gt..n) > pivot
            if (k < lt) candidates = into[..lt];
            else if (k < notGreater) return (pivot, below + lt);
            else
            {
                k -= notGreater;
                below += notGreater;
                candidates = into[notGreater..];
            }
        }
    }

    static float MedianOfThree(float a, float b, float c) => Math.Max(Math.Min(a, b), Math.Min(Math.Max(a, b), c));
}
