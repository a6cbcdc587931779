using System.Security.Cryptography;
using LlmShrink.Formats;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>The activation-weighted (imatrix) paths of the ggml encoders.</summary>
public class ImatrixEncoderTests
{
    private static readonly TensorType[] Covered =
        [TensorType.Q4_0, TensorType.Q4_1, TensorType.Q5_0, TensorType.Q5_1, TensorType.Q8_0, TensorType.Q2_K, TensorType.Q3_K, TensorType.Q4_K,
            TensorType.Q5_K, TensorType.Q6_K];
    public static readonly TheoryData<TensorType> Types = new(Covered);

    /// <summary>Gaussian-ish rows with a few outliers, 4 rows of 512, reproducible.</summary>
    private static float[] Rows(int seed, int count)
    {
        var random = new Random(seed);
        var x = new float[count];
        for (int i = 0; i < count; i++)
        {
            double g = Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
            x[i] = (float)(g * 0.02 * (random.Next(50) == 0 ? 6 : 1));
        }
        return x;
    }

    private static byte[] Encode(TensorType type, float[] x, float[]? importance = null)
    {
        var bytes = new byte[TensorTypes.ByteCount(type, x.Length)];
        GgmlQuantizers.Quantize(type, x, bytes, importance);
        return bytes;
    }

    [Fact]
    public void UnweightedOutputIsUnchanged()
    {
        var x = Rows(7, 2048);
        var hashes = Covered.Select(t => $"{t}:{Convert.ToHexString(SHA256.HashData(Encode(t, x)))[..16]}");
        // Hashes of the encoders' output before the weighted paths were added: no importance, no change. Q2_K's and Q3_K's
        // are those of llama.cpp's own quantize_q2_K / quantize_q3_K without an imatrix (commit c392e50, ggml-base built
        // without -march, so no fused multiply-adds) on these rows: the reference paths are bit-exact ports.
        Assert.Equal("Q4_0:5F66662357ED7A8E Q4_1:A599B6F371E690A1 Q5_0:3378D0652E3B2E10 Q5_1:80C84826908C4F19 Q8_0:4F987B549579FAE1 " +
            "Q2_K:74E55FE11A25F25B Q3_K:4BAB581460085984 Q4_K:EBA6CB0BFD6B38D2 Q5_K:BED3C80FAC7DF9F0 Q6_K:30998C616AC71683", string.Join(" ", hashes));
    }

    /// <summary>Importance spread over three orders of magnitude (log-normal), as activation energies of real layers are.</summary>
    private static float[] SkewedImportance(int seed, int count)
    {
        var random = new Random(seed);
        var importance = new float[count];
        for (int i = 0; i < count; i++)
        {
            double g = Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
            importance[i] = (float)Math.Exp(1.5 * g);
        }
        return importance;
    }

    private static double WeightedError(TensorType type, byte[] encoded, float[] x, float[] importance)
    {
        var decoded = new float[x.Length];
        GgmlBlocks.Dequantize(type, encoded, decoded);
        double sum = 0;
        for (int j = 0; j < x.Length; j++) sum += importance[j] * ((double)decoded[j] - x[j]) * ((double)decoded[j] - x[j]);
        return sum;
    }

    /// <summary>
    /// The weighted encoder keeps, block by block, the better of its own search and the reference quantizer under the
    /// weighted error, so every row's weighted error is at most the unweighted encoder's (checked on 100 seeded rows);
    /// on the sum the search must also gain something.
    /// </summary>
    [Theory]
    [MemberData(nameof(Types))]
    public void WeightedErrorNeverExceedsTheUnweightedEncoders(TensorType type)
    {
        double weightedSum = 0, plainSum = 0;
        for (int seed = 0; seed < 100; seed++)
        {
            var x = Rows(1000 + seed, 256);
            var importance = SkewedImportance(2000 + seed, 256);
            double weighted = WeightedError(type, Encode(type, x, importance), x, importance);
            double plain = WeightedError(type, Encode(type, x), x, importance);
            Assert.True(weighted <= plain, $"row {seed}: weighted {weighted} > unweighted {plain}");
            weightedSum += weighted;
            plainSum += plain;
        }
        Assert.True(weightedSum < 0.9 * plainSum, $"{type}: Σ weighted error {weightedSum:E3} vs unweighted {plainSum:E3} ({weightedSum / plainSum:P1})");
    }

    [Fact]
    public void ImportanceOfTheWrongLengthIsRejected()
    {
        var x = Rows(3, 64);
        Assert.Throws<ArgumentException>(() => Encode(TensorType.Q4_0, x, new float[32]));
    }

    [Fact]
    public void ZeroImportanceKeepsTheReferenceBlock()
    {
        var x = Rows(4, 256);
        foreach (var type in Covered) Assert.Equal(Encode(type, x), Encode(type, x, new float[256]));
    }
}
