using LlmShrink.Compression;

namespace LlmShrink.Planning;

/// <summary>
/// The calibration text the compression never sees, on which the planner measures end-to-end KL: windows of
/// consecutive tokens that no calibration sample covers. Drawing the calibration samples exactly as
/// <c>llmshrink compress</c> does (same file, count, length and seed) and holding back only the rest keeps both
/// promises: the plan re-applied by <c>compress</c> gives the same result, and the KL that steered it was measured on
/// text its calibration did not include. Windows are cut left to right from each uncovered stretch, each BOS followed
/// by <c>length − 1</c> tokens.
/// </summary>
public static class HeldBackSplit
{
    public static int[][] Windows(int[] tokens, CalibrationSet calibration, int bosId, int count, int length, string source)
    {
        if (calibration.Starts is not { } starts) throw new ArgumentException("the calibration set was not drawn from a text", nameof(calibration));
        if (count <= 0) throw new ShrinkException($"--kl-samples: must be positive, not {count}");
        int body = length - 1, drawn = calibration.SequenceLength - 1;
        var covered = new bool[tokens.Length];
        foreach (int start in starts) Array.Fill(covered, true, start, drawn);

        var windows = new List<int[]>();
        int run = 0;
        for (int i = 0; i < tokens.Length && windows.Count < count; i++)
        {
            run = covered[i] ? 0 : run + 1;
            if (run < body) continue;
            var window = new int[length];
            window[0] = bosId;
            tokens.AsSpan(i - body + 1, body).CopyTo(window.AsSpan(1));
            windows.Add(window);
            run = 0;
        }
        if (windows.Count == 0)
            throw ShrinkException.InFile(source, $"no stretch of {body} tokens is left outside the {starts.Length} calibration samples to measure KL on; " +
                "give a longer calibration text or fewer --samples, or a shorter --kl-length");
        return [.. windows];
    }
}
