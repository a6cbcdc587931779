using LlmShrink.Compression;
using LlmShrink.Model;

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
    /// <summary>
    /// The calibration samples exactly as <c>compress</c> draws them from <paramref name="calibrationFile"/>, and
    /// <paramref name="windows"/> held-back windows of the same length. With <c>--calib random</c> (speed and memory work
    /// on random-weight models) both are random token ids, the windows from the next seed.
    /// </summary>
    public static (CalibrationSet Calibration, int[][] HeldBack) Draw(string calibrationFile, LoadedModel model, int samples, int sequenceLength, int seed, int windows)
    {
        var c = model.Config;
        if (calibrationFile == CalibrationSet.RandomSource)
            return (CalibrationSet.Random(c.VocabSize, c.BosTokenId, samples, sequenceLength, seed),
                CalibrationSet.Random(c.VocabSize, c.BosTokenId, windows, sequenceLength, seed + 1).Samples);
        var tokenizer = model.RequireTokenizer();
        var tokens = CalibrationSet.Tokenize(calibrationFile, tokenizer);
        var calibration = CalibrationSet.FromTokens(tokens, tokenizer.BosId, samples, sequenceLength, seed, calibrationFile);
        return (calibration, Windows(tokens, calibration, tokenizer.BosId, windows, sequenceLength, calibrationFile));
    }

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
