using LlmShrink.Kernels;
using LlmShrink.Model;
using Xunit;

namespace LlmShrink.Tests;

public unsafe class KernelTests
{
    private static float[] RandomVector(Random random, int length, float spread = 1f)
    {
        var v = new float[length];
        for (int i = 0; i < length; i++) v[i] = spread * (2 * random.NextSingle() - 1);
        return v;
    }

    [Theory]
    [InlineData(1, 7, 5)]
    [InlineData(1, 16, 16)]
    [InlineData(1, 1030, 37)]
    [InlineData(1, 4096, 9)]
    [InlineData(2, 33, 3)]
    [InlineData(4, 16, 4)]
    [InlineData(5, 100, 21)]
    [InlineData(17, 513, 70)]
    [InlineData(67, 1100, 35)]
    public void MatMul_matches_reference(int n, int inDim, int outDim)
    {
        var random = new Random(n * 1000 + inDim + outDim);
        var x = RandomVector(random, n * inDim);
        var w = RandomVector(random, outDim * inDim);
        var actual = new float[n * outDim];
        var expected = new float[n * outDim];
        Array.Fill(actual, float.NaN); // the kernel must overwrite, not accumulate into, y
        fixed (float* pw = w) MatMul.Multiply(x, pw, actual, n, inDim, outDim);
        MatMul.Reference(x, w, expected, n, inDim, outDim);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < outDim; j++)
            {
                // Rounding error of a length-in dot product is bounded relative to Σ|x_k·w_k|.
                double magnitude = 0;
                for (int k = 0; k < inDim; k++) magnitude += Math.Abs(x[i * inDim + k] * w[j * inDim + k]);
                Assert.True(Math.Abs(actual[i * outDim + j] - expected[i * outDim + j]) <= 1e-5 * magnitude,
                    $"y[{i},{j}] = {actual[i * outDim + j]}, reference {expected[i * outDim + j]}");
            }
    }

    [Fact]
    public void MatMul_single_thread_equals_pool()
    {
        var random = new Random(5);
        int n = 9, inDim = 300, outDim = 130;
        var x = RandomVector(random, n * inDim);
        var w = RandomVector(random, outDim * inDim);
        var one = new float[n * outDim];
        var all = new float[n * outDim];
        fixed (float* pw = w)
        {
            MatMul.Multiply(x, pw, one, n, inDim, outDim, threads: 1);
            MatMul.Multiply(x, pw, all, n, inDim, outDim);
        }
        Assert.Equal(one, all);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(8)]
    [InlineData(48)]
    [InlineData(77)]
    public void RmsNorm_matches_reference(int d)
    {
        var random = new Random(d);
        var x = RandomVector(random, d, 3);
        var w = RandomVector(random, d);
        var actual = new float[d];
        var expected = new float[d];
        RmsNorm.Apply(x, w, actual, 1e-5f);
        RmsNorm.Reference(x, w, expected, 1e-5f);
        for (int i = 0; i < d; i++) Assert.Equal(expected[i], actual[i], 1e-5f * (Math.Abs(expected[i]) + 1e-3f));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(15)]
    [InlineData(64)]
    [InlineData(131)]
    public void Softmax_matches_reference(int n)
    {
        var random = new Random(n);
        var actual = RandomVector(random, n, 30); // large spread: exp overflows unless the max is subtracted
        var expected = actual.ToArray();
        Softmax.Apply(actual);
        Softmax.Reference(expected);
        for (int i = 0; i < n; i++) Assert.Equal(expected[i], actual[i], 1e-5f * expected[i] + 1e-12f);
        Assert.Equal(1.0, actual.Sum(v => (double)v), 1e-5);
    }

    [Theory]
    [InlineData(3)]
    [InlineData(16)]
    [InlineData(75)]
    public void SwiGlu_matches_reference(int n)
    {
        var random = new Random(n);
        var actual = RandomVector(random, n, 12);
        var up = RandomVector(random, n, 2);
        var expected = actual.ToArray();
        SwiGlu.Apply(actual, up);
        SwiGlu.Reference(expected, up);
        for (int i = 0; i < n; i++) Assert.Equal(expected[i], actual[i], 1e-5f * Math.Abs(expected[i]) + 1e-6f);
    }

    [Theory]
    [InlineData(RopeStyle.RotateHalf)]
    [InlineData(RopeStyle.Interleaved)]
    public void Rope_rotates_the_right_pairs_by_position_times_frequency(RopeStyle style)
    {
        var config = SyntheticModel.Config() with { HeadDim = 10, NumHeads = 2, NumKvHeads = 2, RopeStyle = style };
        var rope = Rope.ForModel(config, default);
        int position = 1234, half = 5;
        var cos = new float[half];
        var sin = new float[half];
        rope.Angles(position, cos, sin);
        var random = new Random(1);
        var heads = RandomVector(random, 20);
        var rotated = heads.ToArray();
        rope.Rotate(rotated, cos, sin);
        var freqs = ReferenceForward.Frequencies(config, null);
        for (int h = 0; h < 2; h++)
            for (int p = 0; p < half; p++)
            {
                int a = h * 10 + (style == RopeStyle.Interleaved ? 2 * p : p);
                int b = h * 10 + (style == RopeStyle.Interleaved ? 2 * p + 1 : p + half);
                double phi = position * freqs[p];
                Assert.Equal(heads[a] * Math.Cos(phi) - heads[b] * Math.Sin(phi), rotated[a], 1e-5);
                Assert.Equal(heads[a] * Math.Sin(phi) + heads[b] * Math.Cos(phi), rotated[b], 1e-5);
            }
    }

    [Fact]
    public void Llama3_scaling_keeps_high_frequencies_divides_low_and_blends_between()
    {
        // Llama 3.1 8B: head dim 128, theta 500000, factor 8, low 1, high 4, original context 8192.
        var config = SyntheticModel.Config() with { HeadDim = 128, RopeTheta = 500000f, RopeScaling = new Llama3RopeScaling(8, 1, 4, 8192) };
        var scaled = Rope.ForModel(config, default).Frequencies;
        var plain = Rope.ForModel(config with { RopeScaling = null }, default).Frequencies;
        Assert.Equal(plain[0], scaled[0]);                      // wavelength 2π < 2048: kept
        Assert.Equal(plain[63] / 8, scaled[63], 1e-15);         // wavelength ≫ 8192: divided by the factor
        var expected = ReferenceForward.Frequencies(config, null);
        for (int p = 0; p < 64; p++) Assert.Equal(expected[p], scaled[p], 1e-12 * expected[p]);
        Assert.Contains(Enumerable.Range(0, 64), p => scaled[p] < plain[p] && scaled[p] > plain[p] / 8); // some blended
    }

    [Fact]
    public void Rope_frequency_factors_divide_the_frequencies()
    {
        var config = SyntheticModel.Config();
        float[] factors = [1, 2, 4, 8];
        var freqs = Rope.ForModel(config with { RopeScaling = new Llama3RopeScaling(8, 1, 4, 8192) }, factors).Frequencies;
        for (int p = 0; p < 4; p++) Assert.Equal(Math.Pow(10000, -2.0 * p / 8) / factors[p], freqs[p], 1e-15);
    }

    private sealed class CountingWork(int count) : IParallelWork
    {
        public readonly int[] Hits = new int[count];
        public readonly HashSet<int> Workers = [];
        public void Execute(int begin, int end, int worker)
        {
            for (int i = begin; i < end; i++) Interlocked.Increment(ref Hits[i]);
            lock (Workers) Workers.Add(worker);
        }
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 1)]
    [InlineData(3, 7)]
    [InlineData(4, 1000)]
    public void WorkerPool_runs_every_item_exactly_once(int threads, int count)
    {
        using var pool = new WorkerPool(threads);
        for (int repeat = 0; repeat < 50; repeat++)
        {
            var work = new CountingWork(count);
            pool.For(count, work);
            Assert.All(work.Hits, h => Assert.Equal(1, h));
            Assert.All(work.Workers, w => Assert.InRange(w, 0, threads - 1));
        }
        var single = new CountingWork(count);
        pool.For(count, single, maxThreads: 1);
        Assert.Equal([0], single.Workers);
    }
}
