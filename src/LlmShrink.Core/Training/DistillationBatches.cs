using LlmShrink.Compression;

namespace LlmShrink.Training;

/// <summary>Where <see cref="Distillation"/>'s batches come from: windows of a text, or sequences sampled from the teacher.</summary>
public static class DistillationBatches
{
    /// <summary>
    /// Step s's batch: <paramref name="batch"/> windows at seeded random positions of the text (BOS, then seqLen − 1 tokens;
    /// <see cref="CalibrationSet.FromTokens"/>), as <see cref="Pretraining"/> draws them.
    /// </summary>
    public static Func<int, int[]> FromText(int[] tokens, int bosId, int batch, int seqLen, int seed, string source)
    {
        if (tokens.Length < seqLen - 1)
            throw ShrinkException.InFile(source, $"has {tokens.Length} tokens, fewer than one training sequence of --seq-len {seqLen} (BOS and {seqLen - 1} tokens)");
        return step =>
        {
            var windows = CalibrationSet.FromTokens(tokens, bosId, batch, seqLen, unchecked(seed * 1_000_003 + step), source);
            return [.. windows.Samples.SelectMany(s => s)];
        };
    }

    /// <summary>Step s's batch: sequences s·batch, s·batch + 1, … of <paramref name="sequences"/>, cycling through them in order.</summary>
    public static Func<int, int[]> FromSequences(int[][] sequences, int batch) =>
        step => [.. Enumerable.Range(0, batch).SelectMany(b => sequences[(int)(((long)step * batch + b) % sequences.Length)])];
}
