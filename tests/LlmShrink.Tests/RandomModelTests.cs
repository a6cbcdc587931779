using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text.Json;
using LlmShrink.Formats;
using LlmShrink.Model;
using LlmShrink.Model.Synthesis;
using Xunit;

namespace LlmShrink.Tests;

public class RandomModelTests
{
    private static long Parameters(string shape) =>
        RandomModel.Tensors(RandomModel.Shape(shape)).Sum(t => t.Shape.Aggregate(1L, (a, b) => a * b));

    [Fact]
    public void ShapesHaveThePublishedParameterCounts()
    {
        Assert.Equal(1_235_814_400, Parameters("llama-3.2-1b")); // Llama 3.2 1B, tied embeddings
        Assert.Equal(6_738_415_616, Parameters("llama-2-7b"));   // Llama 2 7B
        Assert.Equal(8_392_960, Parameters("tinylit"));          // the shared tinylit-8m checkpoint (its safetensors header)
    }

    [Fact]
    public void Llama32ShapeCarriesItsRopeScaling()
    {
        var c = RandomModel.Shape("llama-3.2-1b");
        Assert.Equal((2048, 8192, 16, 32, 8, 64, 128256), (c.HiddenSize, c.IntermediateSize, c.NumLayers, c.NumHeads, c.NumKvHeads, c.HeadDim, c.VocabSize));
        Assert.True(c.TiedEmbeddings);
        Assert.Equal(500000f, c.RopeTheta);
        Assert.Equal(new Llama3RopeScaling(32, 1, 4, 8192), c.RopeScaling);
        c.Validate("llama-3.2-1b");
        Assert.Throws<ShrinkException>(() => RandomModel.Shape("gpt-5"));
    }

    [Fact]
    public void GaussianGeneratorHasTheRequestedMomentsAndIsSeeded()
    {
        var values = new float[1_000_001]; // odd length: the last value comes from a half-used pair
        GaussianGenerator.ForItem(5, 0).FillNormal(values, 0.02f);
        double mean = values.Average(v => (double)v);
        double std = Math.Sqrt(values.Average(v => (v - mean) * (v - mean)));
        Assert.Equal(0, mean, 1e-4);          // standard error 0.02/1000 = 2e-5
        Assert.Equal(0.02, std, 1e-4);
        double within1 = values.Count(v => Math.Abs(v) < 0.02f) / (double)values.Length;
        Assert.Equal(0.6827, within1, 0.003); // a normal distribution, not just any with these moments
        Assert.NotEqual(0f, values[^1]);

        var again = new float[1000];
        GaussianGenerator.ForItem(5, 0).FillNormal(again, 0.02f);
        Assert.Equal(values[..500], again[..500]);
        var other = new float[1000];
        GaussianGenerator.ForItem(5, 1).FillNormal(other, 0.02f);
        Assert.NotEqual(again, other);
    }

    [Theory]
    [InlineData(TensorType.F32, 4)]
    [InlineData(TensorType.BF16, 2)]
    [InlineData(TensorType.F16, 2)]
    public void WritesAHuggingFaceFolderWithTheShapesAndDistribution(TensorType dtype, int bytesPerElement)
    {
        using var temp = new TempDir();
        var config = RandomModel.Shape("tinylit");
        RandomModel.Write(temp.Path, config, dtype, seed: 9);

        using (var json = JsonDocument.Parse(File.ReadAllText(temp.File("config.json"))))
        {
            var root = json.RootElement;
            Assert.Equal(256, root.GetProperty("hidden_size").GetInt32());
            Assert.Equal(768, root.GetProperty("intermediate_size").GetInt32());
            Assert.Equal(8, root.GetProperty("num_hidden_layers").GetInt32());
            Assert.Equal(4, root.GetProperty("num_key_value_heads").GetInt32());
            Assert.Equal(4096, root.GetProperty("vocab_size").GetInt32());
            Assert.False(root.GetProperty("tie_word_embeddings").GetBoolean());
            Assert.Equal(1e-5, root.GetProperty("rms_norm_eps").GetDouble(), 1e-12);
        }

        var (header, dataStart) = ReadSafetensorsHeader(temp.File("model.safetensors"));
        var file = File.ReadAllBytes(temp.File("model.safetensors"));
        var expected = RandomModel.Tensors(config);
        Assert.Equal(expected.Count, header.Count);
        foreach (var (name, shape, isNorm) in expected)
        {
            var entry = header[name];
            Assert.Equal(shape, entry.Shape);
            Assert.Equal(dtype.ToString(), entry.Dtype);
            Assert.Equal(shape.Aggregate(1L, (a, b) => a * b) * bytesPerElement, entry.End - entry.Begin);
            var values = Decode(file.AsSpan((int)(dataStart + entry.Begin), (int)(entry.End - entry.Begin)), dtype);
            if (isNorm) Assert.All(values, v => Assert.Equal(1f, v));
            else
            {
                double std = Math.Sqrt(values.Average(v => (double)v * v));
                Assert.Equal(0.02, std, 0.002);
            }
        }
    }

    [Fact]
    public void WrittenModelLoadsAndItsStatisticsMatchTheShape()
    {
        using var temp = new TempDir();
        RandomModel.Write(temp.Path, RandomModel.Shape("tinylit"), TensorType.F16, seed: 1);
        using var model = ModelLoader.Load(temp.Path);
        Assert.Equal(RandomModel.Shape("tinylit") with { RopeStyle = model.Config.RopeStyle }, model.Config);
        var stats = LlmShrink.Evaluation.ModelStatistics.Of(model);
        Assert.Equal(8_392_960, stats.Parameters);
        Assert.Equal(16.0, stats.BitsPerWeight, 1e-12);
        var groups = stats.Groups.ToDictionary(g => g.Name, g => g.Parameters);
        Assert.Equal(4096 * 256, groups["embedding"]);
        Assert.Equal(4096 * 256, groups["lm_head"]);
        Assert.Equal(8 * (2 * 256 + 0) + 256, groups["norms"]);
        Assert.Equal(0, groups["other"]);
        // Weights read per token: everything but the embedding lookup and the norms, at 2 bytes each.
        long matmul = 8_392_960 - 4096 * 256 - (8 * 2 * 256 + 256);
        Assert.Equal(matmul, stats.MatmulParameters);
        Assert.Equal(2 * matmul, stats.MatmulBytes);
        Assert.Equal(2.0 * matmul + 4.0 * 8 * 100 * 256, stats.FlopsPerToken(100));
    }

    [Fact]
    public void SameSeedGivesTheSameBytes()
    {
        using var a = new TempDir();
        using var b = new TempDir();
        RandomModel.Write(a.Path, RandomModel.Shape("tinylit"), TensorType.BF16, seed: 3);
        RandomModel.Write(b.Path, RandomModel.Shape("tinylit"), TensorType.BF16, seed: 3);
        Assert.Equal(File.ReadAllBytes(a.File("model.safetensors")), File.ReadAllBytes(b.File("model.safetensors")));
    }

    [Fact]
    public void QuantizedDtypesAreRejected()
    {
        using var temp = new TempDir();
        Assert.Throws<ShrinkException>(() => RandomModel.Write(temp.Path, RandomModel.Shape("tinylit"), TensorType.Q4_0, 0));
    }

    private sealed record HeaderEntry(string Dtype, long[] Shape, long Begin, long End);

    /// <summary>safetensors: 8-byte little-endian header length, JSON header, then the data block.</summary>
    private static (Dictionary<string, HeaderEntry>, long DataStart) ReadSafetensorsHeader(string path)
    {
        using var stream = File.OpenRead(path);
        var lengthBytes = new byte[8];
        stream.ReadExactly(lengthBytes);
        long length = BinaryPrimitives.ReadInt64LittleEndian(lengthBytes);
        var headerBytes = new byte[length];
        stream.ReadExactly(headerBytes);
        using var json = JsonDocument.Parse(headerBytes);
        var entries = new Dictionary<string, HeaderEntry>();
        foreach (var p in json.RootElement.EnumerateObject())
        {
            if (p.Name == "__metadata__") continue;
            var offsets = p.Value.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            entries[p.Name] = new HeaderEntry(p.Value.GetProperty("dtype").GetString()!,
                p.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray(), offsets[0], offsets[1]);
        }
        return (entries, 8 + length);
    }

    private static float[] Decode(ReadOnlySpan<byte> bytes, TensorType dtype)
    {
        var values = new float[bytes.Length / (dtype == TensorType.F32 ? 4 : 2)];
        TensorDecoding.DecodeRow(dtype, bytes, values);
        return values;
    }
}
