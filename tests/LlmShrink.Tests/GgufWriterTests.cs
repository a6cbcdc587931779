using LlmShrink.Formats;
using LlmShrink.Formats.Gguf;
using Xunit;

namespace LlmShrink.Tests;

public class GgufWriterTests
{
    [Fact]
    public void Every_metadata_value_type_and_tensor_layout_reads_back()
    {
        using var dir = new TempDir();
        var writer = new GgufWriter(alignment: 64)
            .Add("u8", new GgufValue(GgufValueType.UInt8, (byte)200))
            .Add("i8", new GgufValue(GgufValueType.Int8, (sbyte)-100))
            .Add("u16", new GgufValue(GgufValueType.UInt16, (ushort)60000))
            .Add("i16", new GgufValue(GgufValueType.Int16, (short)-30000))
            .AddUInt32("u32", 4_000_000_000)
            .AddInt32("i32", -2_000_000_000)
            .AddFloat32("f32", 1.5f)
            .AddBool("bool", true)
            .AddString("string", "héllo")
            .Add("u64", new GgufValue(GgufValueType.UInt64, ulong.MaxValue))
            .Add("i64", new GgufValue(GgufValueType.Int64, long.MinValue))
            .Add("f64", new GgufValue(GgufValueType.Float64, Math.PI))
            .AddStrings("strings", ["a", "", "ü"])
            .AddInt32s("ints", [1, -2, 3])
            .Add("nested", new GgufValue(GgufValueType.Array, (Array)new[] { new GgufValue(GgufValueType.Float32, (Array)new[] { 1f, 2f }) }));
        var data = Enumerable.Range(0, 3 * 32).Select(i => (float)i).ToArray();
        writer.AddTensor("matrix", [3, 32], TensorType.F32, s => s.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan())));
        writer.AddTensor("vector", [5], TensorType.F16, s => s.Write(new byte[10]));
        string path = dir.File("all.gguf");
        writer.Write(path, []);

        using var gguf = GgufFile.Open(path);
        Assert.Equal(3u, gguf.Version);
        Assert.Equal(64u, gguf.Alignment);
        var m = gguf.Metadata;
        Assert.Equal((byte)200, m.Get("u8").Raw);
        Assert.Equal((sbyte)-100, m.Get("i8").Raw);
        Assert.Equal((ushort)60000, m.Get("u16").Raw);
        Assert.Equal((short)-30000, m.Get("i16").Raw);
        Assert.Equal(4_000_000_000u, m.Get("u32").Raw);
        Assert.Equal(-2_000_000_000, m.Get("i32").Raw);
        Assert.Equal(1.5f, m.Get("f32").Raw);
        Assert.Equal(true, m.Get("bool").Raw);
        Assert.Equal("héllo", m.GetString("string"));
        Assert.Equal(ulong.MaxValue, m.Get("u64").Raw);
        Assert.Equal(long.MinValue, m.Get("i64").Raw);
        Assert.Equal(Math.PI, m.Get("f64").Raw);
        Assert.Equal(["a", "", "ü"], m.GetStringArray("strings"));
        Assert.Equal([1, -2, 3], m.GetInt32Array("ints"));
        Assert.Equal([1f, 2f], (float[])((GgufValue[])m.Get("nested").Raw)[0].Raw);

        var matrix = gguf.FindTensor("matrix")!;
        Assert.Equal([3L, 32L], matrix.Shape);
        Assert.Equal(data, matrix.ToFloatArray());
        var vector = gguf.FindTensor("vector")!;
        Assert.Equal(TensorType.F16, vector.Type);
        Assert.Equal(0, (vector.Offset - gguf.DataOffset) % 64);
        Assert.Equal(0, gguf.DataOffset % 64);
    }

    [Fact]
    public void A_producer_that_writes_the_wrong_byte_count_leaves_no_file()
    {
        using var dir = new TempDir();
        var writer = new GgufWriter().AddTensor("t", [32], TensorType.F32, s => s.Write(new byte[4]));
        Assert.Throws<InvalidOperationException>(() => writer.Write(dir.File("bad.gguf"), []));
        Assert.Empty(Directory.GetFiles(dir.Path));
    }
}
