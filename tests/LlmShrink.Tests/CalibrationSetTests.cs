using LlmShrink.Compression;
using LlmShrink.Formats;
using LlmShrink.Model;
using LlmShrink.Model.Synthesis;
using Xunit;

namespace LlmShrink.Tests;

public class CalibrationSetTests
{
    [Fact]
    public void RandomSamplesAreSeededUniformAndStartWithBos()
    {
        var set = CalibrationSet.Random(vocabSize: 50, bosId: 1, samples: 40, sequenceLength: 501, seed: 7);
        Assert.Equal(40, set.Samples.Length);
        Assert.Equal(501, set.SequenceLength);
        Assert.All(set.Samples, s => Assert.Equal(1, s[0]));
        var counts = new int[50];
        foreach (var s in set.Samples)
            foreach (int id in s.AsSpan(1))
            {
                Assert.InRange(id, 0, 49);
                counts[id]++;
            }
        // 20,000 draws over 50 ids: 400 expected each, standard deviation ≈ 20; six deviations is a broken generator.
        Assert.All(counts, c => Assert.InRange(c, 280, 520));

        var again = CalibrationSet.Random(50, 1, 40, 501, seed: 7);
        Assert.Equal(set.Samples, again.Samples);
        var other = CalibrationSet.Random(50, 1, 40, 501, seed: 8);
        Assert.NotEqual(set.Samples[0], other.Samples[0]);
        // A BOS id outside the vocabulary (a random model's config may carry any) falls back to id 0.
        Assert.Equal(0, CalibrationSet.Random(10, 128000, 1, 4, 0).Samples[0][0]);
        Assert.Throws<ShrinkException>(() => CalibrationSet.Random(50, 1, 0, 8, 0));
        Assert.Throws<ShrinkException>(() => CalibrationSet.Random(50, 1, 2, 1, 0));
    }

    [Fact]
    public void CompressWithRandomCalibrationNeedsNoTokenizer()
    {
        using var temp = new TempDir();
        string model = temp.File("model"), output = temp.File("w4");
        RandomModel.Write(model, RandomModel.Shape("tinylit"), TensorType.F32, seed: 3);
        Assert.False(File.Exists(Path.Combine(model, "tokenizer.json")) || File.Exists(Path.Combine(model, "tokenizer.model")));

        var summary = CompressionJob.Run(new CompressionRequest(model, "w4g128-rtn", CalibrationSet.RandomSource, 2, 16, 0, output));
        Assert.NotEmpty(summary.Pipeline.Layers);
        Assert.True(summary.CompressedBytes < summary.OriginalBytes / 2, $"{summary.CompressedBytes} vs {summary.OriginalBytes}");
        using var compressed = ModelLoader.Load(output);
        Assert.NotNull(compressed.Weights.Find("model.layers.0.mlp.down_proj.qweight"));
    }
}
