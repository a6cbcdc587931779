using LlmShrink.Tokenization;

namespace LlmShrink.Compression;

/// <summary>
/// N samples of L tokens drawn reproducibly from a text file: the file is tokenized once, and each sample is BOS
/// followed by L−1 consecutive tokens starting at a seeded random position (as GPTQ's reference draws random
/// windows; the BOS makes the first position look like the start of a prompt, as in inference).
/// </summary>
public sealed class CalibrationSet
{
    public int[][] Samples { get; }
    public int SequenceLength { get; }
    public int TokenCount => Samples.Length * SequenceLength;

    public CalibrationSet(int[][] samples)
    {
        if (samples.Length == 0) throw new ArgumentException("a calibration set needs at least one sample", nameof(samples));
        SequenceLength = samples[0].Length;
        if (SequenceLength == 0 || samples.Any(s => s.Length != SequenceLength))
            throw new ArgumentException("calibration samples must all have the same positive length", nameof(samples));
        Samples = samples;
    }

    /// <summary>What <c>--calib</c> takes to mean <see cref="Random"/> instead of a file.</summary>
    public const string RandomSource = "random";

    /// <summary>
    /// N samples of L token ids drawn uniformly from [0, <paramref name="vocabSize"/>) with a seeded generator, each
    /// starting with BOS. No text and no tokenizer: for speed and memory work on random-weight models, where the
    /// statistics of real text carry no meaning anyway.
    /// </summary>
    public static CalibrationSet Random(int vocabSize, int bosId, int samples, int sequenceLength, int seed)
    {
        if (vocabSize <= 0) throw new ArgumentOutOfRangeException(nameof(vocabSize), "vocabulary must not be empty");
        if (samples <= 0) throw new ShrinkException($"--samples: must be positive, not {samples}");
        if (sequenceLength < 2) throw new ShrinkException($"--seq-len: must be at least 2, not {sequenceLength}");
        var random = new System.Random(seed);
        var result = new int[samples][];
        for (int s = 0; s < samples; s++)
        {
            var sample = new int[sequenceLength];
            sample[0] = (uint)bosId < (uint)vocabSize ? bosId : 0;
            for (int t = 1; t < sequenceLength; t++) sample[t] = random.Next(vocabSize);
            result[s] = sample;
        }
        return new CalibrationSet(result);
    }

    /// <summary>Refuses a calibration file that is not text at once, before a model is loaded (the random source passes).</summary>
    public static void CheckSource(string path)
    {
        if (path != RandomSource) Formats.TextFile.EnsureText(path, "calibration text");
    }

    public static CalibrationSet FromFile(string path, ITextTokenizer tokenizer, int samples, int sequenceLength, int seed) =>
        FromTokens(Tokenize(path, tokenizer), tokenizer.BosId, samples, sequenceLength, seed, path);

    /// <summary>The calibration text's tokens (no BOS).</summary>
    public static int[] Tokenize(string path, ITextTokenizer tokenizer)
    {
        string text = Formats.TextFile.ReadAll(path, "calibration text");
        return tokenizer.Encode(text, addBos: false);
    }

    /// <summary>Samples drawn from <paramref name="tokens"/> (the text of <paramref name="source"/>); <see cref="Starts"/> says where each body begins.</summary>
    public static CalibrationSet FromTokens(int[] tokens, int bosId, int samples, int sequenceLength, int seed, string source)
    {
        if (samples <= 0) throw new ShrinkException($"--samples: must be positive, not {samples}");
        if (sequenceLength < 2) throw new ShrinkException($"--seq-len: must be at least 2, not {sequenceLength}");
        int body = sequenceLength - 1;
        if (tokens.Length < body)
            throw ShrinkException.InFile(source, $"has {tokens.Length} tokens, fewer than one calibration sample of {sequenceLength}");
        var random = new System.Random(seed);
        var result = new int[samples][];
        var starts = new int[samples];
        for (int s = 0; s < samples; s++)
        {
            int start = starts[s] = random.Next(tokens.Length - body + 1);
            var sample = new int[sequenceLength];
            sample[0] = bosId;
            tokens.AsSpan(start, body).CopyTo(sample.AsSpan(1));
            result[s] = sample;
        }
        return new CalibrationSet(result) { Starts = starts };
    }

    /// <summary>Where each sample's tokens after BOS begin in the text's tokens, when drawn from a text.</summary>
    public int[]? Starts { get; private init; }
}
