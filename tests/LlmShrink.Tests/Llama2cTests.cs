using System.Buffers.Binary;
using System.Runtime.InteropServices;
using LlmShrink.Formats;
using LlmShrink.Formats.Llama2c;
using LlmShrink.Model;
using Xunit;

namespace LlmShrink.Tests;

public class Llama2cTests
{
    private const int Dim = 16, Hidden = 24, Layers = 2, Heads = 4, KvHeads = 2, Vocab = 11, SeqLen = 8;
    private const int HeadSize = Dim / Heads, KvDim = KvHeads * HeadSize;

    /// <summary>Writes a random llama2.c file and returns its float32 body (everything after the header) for comparison.</summary>
    private static float[] WriteCheckpoint(string path, bool shared, int[]? header = null, int extraFloats = 0)
    {
        header ??= [Dim, Hidden, Layers, Heads, KvHeads, shared ? Vocab : -Vocab, SeqLen];
        long floats = (long)Vocab * Dim + Layers * Dim * 2 + Layers * Dim * Dim * 2 + Layers * KvDim * Dim * 2
            + Layers * Hidden * Dim * 3 + Dim + SeqLen * HeadSize + (shared ? 0 : Vocab * Dim) + extraFloats;
        var random = new Random(1234);
        var body = new float[floats];
        for (int i = 0; i < body.Length; i++) body[i] = (float)(random.NextDouble() * 2 - 1);
        using var stream = File.Create(path);
        var field = new byte[4];
        foreach (int h in header)
        {
            BinaryPrimitives.WriteInt32LittleEndian(field, h);
            stream.Write(field);
        }
        stream.Write(MemoryMarshal.AsBytes(body.AsSpan()));
        return body;
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void EveryCanonicalTensorReadsBackAtItsOffset(bool shared)
    {
        using var dir = new TempDir();
        string path = dir.File("model.bin");
        var body = WriteCheckpoint(path, shared);
        using var model = Llama2cModelLoader.Load(path, null);

        var c = model.Config;
        Assert.Equal("llama2c", model.Format);
        Assert.Equal(("llama", Dim, Hidden, Layers, Heads, KvHeads, HeadSize, Vocab, SeqLen),
            (c.Architecture, c.HiddenSize, c.IntermediateSize, c.NumLayers, c.NumHeads, c.NumKvHeads, c.HeadDim, c.VocabSize, c.MaxPositions));
        Assert.Equal(RopeStyle.Interleaved, c.RopeStyle);
        Assert.Equal(shared, c.TiedEmbeddings);
        Assert.Null(model.Tokenizer); // no tokenizer.bin beside it

        // Walk the file layout independently of the loader: (name, shape) in file order, layers stacked per array.
        long cursor = 0; // in floats, after the header
        void Check(string name, long[] shape)
        {
            var t = model.Weights.Get(name);
            Assert.Equal(shape, t.Shape);
            Assert.Equal(TensorType.F32, t.Type);
            Assert.Equal(Llama2cCheckpoint.HeaderBytes + 4 * cursor, t.Offset);
            long n = shape.Aggregate(1L, (a, b) => a * b);
            Assert.Equal(body.AsSpan((int)cursor, (int)n).ToArray(), t.ToFloatArray());
            cursor += n;
        }
        void Stacked(string suffix, params long[] shape) { for (int i = 0; i < Layers; i++) Check(TensorNames.Layer(i, suffix), shape); }

        Check(TensorNames.Embedding, [Vocab, Dim]);
        Stacked(TensorNames.AttnNorm, Dim);
        Stacked(TensorNames.Q, Dim, Dim);
        Stacked(TensorNames.K, KvDim, Dim);
        Stacked(TensorNames.V, KvDim, Dim);
        Stacked(TensorNames.O, Dim, Dim);
        Stacked(TensorNames.FfnNorm, Dim);
        Stacked(TensorNames.Gate, Hidden, Dim);
        Stacked(TensorNames.Down, Dim, Hidden);
        Stacked(TensorNames.Up, Hidden, Dim);
        Check(TensorNames.FinalNorm, [Dim]);
        cursor += SeqLen * HeadSize; // freq_cis_real + freq_cis_imag, each seq_len × head_size / 2
        if (shared) Assert.Null(model.Weights.Find(TensorNames.LmHead));
        else Check(TensorNames.LmHead, [Vocab, Dim]);
        Assert.Equal(body.Length, cursor);
        Assert.Equal(2 + Layers * 9 + (shared ? 0 : 1), model.Weights.Count);
    }

    [Fact]
    public void ModelLoaderRoutesBinFilesHere()
    {
        using var dir = new TempDir();
        string path = dir.File("stories.bin");
        WriteCheckpoint(path, shared: true);
        using var model = ModelLoader.Load(path);
        Assert.Equal("llama2c", model.Format);
    }

    [Fact]
    public void EveryTruncationAndAnyTrailingBytesAreUserErrors()
    {
        using var dir = new TempDir();
        string good = dir.File("good.bin");
        WriteCheckpoint(good, shared: false);
        var raw = File.ReadAllBytes(good);
        string bad = dir.File("bad.bin");
        for (int length = 0; length < raw.Length; length += length < 64 ? 1 : 97)
        {
            File.WriteAllBytes(bad, raw[..length]);
            var e = Assert.Throws<ShrinkException>(() => Llama2cModelLoader.Load(bad, null).Dispose());
            Assert.StartsWith(bad + ": ", e.Message);
        }
        File.WriteAllBytes(bad, raw[..^1]);
        Assert.Contains("truncated", Assert.Throws<ShrinkException>(() => Llama2cModelLoader.Load(bad, null)).Message);
        File.WriteAllBytes(bad, [.. raw, 0, 0, 0, 0]);
        Assert.Contains("implies", Assert.Throws<ShrinkException>(() => Llama2cModelLoader.Load(bad, null)).Message);
    }

    [Theory]
    [InlineData(new[] { -16, 24, 2, 4, 2, 11, 8 }, "must be positive")]
    [InlineData(new[] { 16, 24, 0, 4, 2, 11, 8 }, "must be positive")]
    [InlineData(new[] { 16, 24, 2, 4, 2, 0, 8 }, "must be positive")]
    [InlineData(new[] { 16, 24, 2, 4, 2, int.MinValue, 8 }, "must be positive")]
    [InlineData(new[] { 16, 24, 2, 5, 1, 11, 8 }, "not divisible by n_heads 5")]
    [InlineData(new[] { 16, 24, 2, 4, 3, 11, 8 }, "not a multiple of 3")]
    [InlineData(new[] { 16, 24, 2, 16, 16, 11, 8 }, "must be even")]
    [InlineData(new[] { int.MaxValue, int.MaxValue, int.MaxValue, 1, 1, int.MaxValue, int.MaxValue }, "implausibly large")]
    [InlineData(new[] { 16, 24, 2, 4, 2, 11, int.MaxValue }, "implausibly large")]
    [InlineData(new[] { 16, 24, 3, 4, 2, 11, 8 }, "implies")]
    [InlineData(new[] { 0x616b3432, 1, 0, 0, 0, 0, 0 }, "ak42")]
    public void InconsistentHeadersAreUserErrors(int[] header, string expected)
    {
        using var dir = new TempDir();
        string path = dir.File("bad.bin");
        WriteCheckpoint(path, shared: true, header);
        var e = Assert.Throws<ShrinkException>(() => Llama2cModelLoader.Load(path, null));
        Assert.StartsWith(path + ": ", e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void NamedTokenizerMustExist()
    {
        using var dir = new TempDir();
        string path = dir.File("model.bin");
        WriteCheckpoint(path, shared: true);
        var e = Assert.Throws<ShrinkException>(() => Llama2cModelLoader.Load(path, dir.File("missing-tokenizer.bin")));
        Assert.Equal(dir.File("missing-tokenizer.bin") + ": tokenizer file not found", e.Message);
    }
}
