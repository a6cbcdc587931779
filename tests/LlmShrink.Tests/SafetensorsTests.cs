using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using LlmShrink.Formats;
using LlmShrink.Formats.Safetensors;
using Xunit;

namespace LlmShrink.Tests;

public class SafetensorsTests
{
    /// <summary>Values exactly representable in every dtype under test (small integers and halves are exact in F16/BF16).</summary>
    private static readonly float[] Values = [0f, 1f, -2f, 3f, -4f, 5f, 6f, -7f, 8f, 9f, -10f, 11f, 12f, -13f, 14f];

    private static byte[] Encode(TensorType type, float[] values)
    {
        int size = TensorTypes.BlockBytes(type);
        var bytes = new byte[values.Length * size];
        for (int i = 0; i < values.Length; i++)
        {
            var dst = bytes.AsSpan(i * size, size);
            float v = values[i];
            switch (type)
            {
                case TensorType.F32: BinaryPrimitives.WriteSingleLittleEndian(dst, v); break;
                case TensorType.F16: BinaryPrimitives.WriteHalfLittleEndian(dst, (Half)v); break;
                case TensorType.BF16: BinaryPrimitives.WriteUInt16LittleEndian(dst, (ushort)(BitConverter.SingleToInt32Bits(v) >> 16)); break;
                case TensorType.F64: BinaryPrimitives.WriteDoubleLittleEndian(dst, v); break;
                case TensorType.I8: dst[0] = (byte)(sbyte)v; break;
                case TensorType.I16: BinaryPrimitives.WriteInt16LittleEndian(dst, (short)v); break;
                case TensorType.I32: BinaryPrimitives.WriteInt32LittleEndian(dst, (int)v); break;
                case TensorType.I64: BinaryPrimitives.WriteInt64LittleEndian(dst, (long)v); break;
                default: throw new ArgumentException(type.ToString());
            }
        }
        return bytes;
    }

    private static SafetensorsWriter.Entry EntryOf(string name, TensorType type, long[] shape, byte[] bytes) =>
        new(name, type, shape, s => s.Write(bytes));

    private static readonly TensorType[] AllTypes =
        [TensorType.F32, TensorType.F16, TensorType.BF16, TensorType.F64, TensorType.I8, TensorType.I16, TensorType.I32, TensorType.I64];

    [Fact]
    public void RoundTripsEveryDTypeWithMetadata()
    {
        using var dir = new TempDir();
        string path = dir.File("all.safetensors");
        var entries = AllTypes.Select(t => EntryOf($"t.{t}", t, [3, 5], Encode(t, Values))).ToList();
        entries.Add(EntryOf("scalar", TensorType.F32, [], Encode(TensorType.F32, [42f])));
        entries.Add(EntryOf("empty", TensorType.F16, [0, 4], []));
        SafetensorsWriter.Write(path, entries, new Dictionary<string, string> { ["format"] = "pt", ["note"] = "ünïcode + <json>" });

        var raw = File.ReadAllBytes(path);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(raw);
        Assert.Equal(0UL, (8 + headerLength) % 8);

        using var file = SafetensorsFile.Open(path);
        Assert.Equal("pt", file.Metadata["format"]);
        Assert.Equal("ünïcode + <json>", file.Metadata["note"]);
        Assert.Equal(entries.Select(e => e.Name), file.Tensors.Select(t => t.Name));
        foreach (var type in AllTypes)
        {
            var t = file.Find($"t.{type}")!;
            Assert.Equal(type, t.Type);
            Assert.Equal([3L, 5L], t.Shape);
            Assert.Equal(Values, t.ToFloatArray());
            Assert.Equal(Encode(type, Values), file.File.Span(t.Offset, (int)t.ByteLength).ToArray());
        }
        Assert.Equal([42f], file.Find("scalar")!.ToFloatArray());
        Assert.Equal([0L, 4L], file.Find("empty")!.Shape);
        Assert.Equal(0, file.Find("empty")!.ByteLength);
        Assert.Equal(raw.Length, file.File.Length);
        Assert.Single(Directory.GetFiles(dir.Path)); // no temporary left behind
    }

    [Fact]
    public void DataStartsRightAfterThePaddedHeader()
    {
        using var dir = new TempDir();
        string path = dir.File("a.safetensors");
        SafetensorsWriter.Write(path, [EntryOf("a", TensorType.F32, [2], Encode(TensorType.F32, [1f, 2f])), EntryOf("b", TensorType.I8, [3], [1, 2, 3])]);
        var raw = File.ReadAllBytes(path);
        long dataStart = 8 + (long)BinaryPrimitives.ReadUInt64LittleEndian(raw);
        using var file = SafetensorsFile.Open(path);
        Assert.Equal(dataStart, file.Find("a")!.Offset);
        Assert.Equal(dataStart + 8, file.Find("b")!.Offset);
        Assert.Equal(dataStart + 11, raw.Length);
        string header = Encoding.UTF8.GetString(raw, 8, (int)(dataStart - 8));
        Assert.Contains("\"data_offsets\":[8,11]", header);
    }

    [Fact]
    public void ShardedCheckpointLoadsThroughItsIndex()
    {
        using var dir = new TempDir();
        SafetensorsWriter.Write(dir.File("model-00001-of-00002.safetensors"),
            [EntryOf("a", TensorType.F32, [2, 2], Encode(TensorType.F32, [1, 2, 3, 4])), EntryOf("b", TensorType.BF16, [3], Encode(TensorType.BF16, [5, 6, 7]))]);
        SafetensorsWriter.Write(dir.File("model-00002-of-00002.safetensors"),
            [EntryOf("c", TensorType.F16, [1, 3], Encode(TensorType.F16, [-1, -2, -3]))]);
        File.WriteAllText(dir.File(SafetensorsIndex.FileName), """
            {"metadata": {"total_size": 26}, "weight_map": {
              "a": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors", "b": "model-00001-of-00002.safetensors"}}
            """);

        using var set = SafetensorsIndex.Load(dir.File(SafetensorsIndex.FileName));
        Assert.Equal(3, set.Count);
        Assert.Equal(2, set.Files.Count); // each shard mapped once
        Assert.Equal([1f, 2, 3, 4], set.Get("a").ToFloatArray());
        Assert.Equal([5f, 6, 7], set.Get("b").ToFloatArray());
        Assert.Equal([-1f, -2, -3], set.Get("c").ToFloatArray());
        Assert.EndsWith("model-00002-of-00002.safetensors", set.Get("c").File.Path);
    }

    [Fact]
    public void IndexNamingATensorItsShardLacksIsAnError()
    {
        using var dir = new TempDir();
        SafetensorsWriter.Write(dir.File("s1.safetensors"), [EntryOf("a", TensorType.F32, [1], Encode(TensorType.F32, [1]))]);
        File.WriteAllText(dir.File(SafetensorsIndex.FileName), """{"weight_map": {"a": "s1.safetensors", "z": "s1.safetensors"}}""");
        var e = Assert.Throws<ShrinkException>(() => SafetensorsIndex.Load(dir.File(SafetensorsIndex.FileName)));
        Assert.Contains("s1.safetensors", e.Message);
        Assert.Contains("'z'", e.Message);
    }

    [Theory]
    [InlineData("""{"weight_map": {"a": "../outside.safetensors"}}""", "not a file name")]
    [InlineData("""{"weight_map": {"a": 3}}""", "not a file name")]
    [InlineData("""{"metadata": {}}""", "weight_map")]
    [InlineData("""{"weight_map": {}}""", "empty")]
    [InlineData("""{"weight_map": {"a": "s""", "JSON")]
    [InlineData("""{"weight_map": {"a": "missing.safetensors"}}""", "not found")]
    public void BadIndexIsAnError(string json, string expected)
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File(SafetensorsIndex.FileName), json);
        var e = Assert.Throws<ShrinkException>(() => SafetensorsIndex.Load(dir.File(SafetensorsIndex.FileName)));
        Assert.Contains(expected, e.Message);
        Assert.Contains(dir.Path, e.Message);
    }

    [Fact]
    public void EveryTruncationIsAUserError()
    {
        using var dir = new TempDir();
        string good = dir.File("good.safetensors");
        SafetensorsWriter.Write(good, [EntryOf("x", TensorType.F32, [2, 3], Encode(TensorType.F32, [1, 2, 3, 4, 5, 6])), EntryOf("y", TensorType.I8, [5], [1, 2, 3, 4, 5])]);
        var raw = File.ReadAllBytes(good);
        string cut = dir.File("cut.safetensors");
        for (int length = 0; length < raw.Length; length++)
        {
            File.WriteAllBytes(cut, raw[..length]);
            var e = Assert.Throws<ShrinkException>(() => SafetensorsFile.Open(cut).Dispose());
            Assert.StartsWith(cut + ": ", e.Message);
        }
    }

    private static string WriteRaw(TempDir dir, string header, byte[] data, ulong? headerLength = null)
    {
        string path = dir.File("raw.safetensors");
        var headerBytes = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + headerBytes.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, headerLength ?? (ulong)headerBytes.Length);
        headerBytes.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + headerBytes.Length);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    [Theory]
    [InlineData("""{"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}""", null, null)] // control: valid
    [InlineData("""{"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}""", null, "not valid JSON")]
    [InlineData("""[1, 2]""", null, "not a JSON object")]
    [InlineData("""{"x": {"dtype": "BOOL", "shape": [8], "data_offsets": [0, 8]}}""", null, "tensor 'x': unsupported dtype BOOL")]
    [InlineData("""{"x": {"dtype": "BOOL", "shape": [8], "data_offsets": [0, 8]}}""", null, "unsupported dtype BOOL")]
    [InlineData("""{"x": {"dtype": "F8_E4M3", "shape": [8], "data_offsets": [0, 8]}}""", null, "unsupported dtype F8_E4M3")]
    [InlineData("""{"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}""", null, "needs 12")]
    [InlineData("""{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "y": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}}""", null, "overlap")]
    [InlineData("""{"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}, "y": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}, "z": {"dtype": "I8", "shape": [2], "data_offsets": [6, 8]}}""", null, "overlap")]
    [InlineData("""{"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}""", null, "past the end of the data")]
    [InlineData("""{"x": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}""", null, "non-negative integers")]
    [InlineData("""{"x": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}}""", null, "non-negative integers")]
    [InlineData("""{"x": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}""", null, "end before")]
    [InlineData("""{"x": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}""", null, "2 numbers")]
    [InlineData("""{"x": {"shape": [2], "data_offsets": [0, 8]}}""", null, "dtype")]
    [InlineData("""{"x": {"dtype": "F32", "data_offsets": [0, 8]}}""", null, "shape")]
    [InlineData("""{"x": {"dtype": "F32", "shape": [4294967296, 4294967296, 4294967296], "data_offsets": [0, 8]}}""", null, "impossibly large")]
    [InlineData("""{"x": {"dtype": "F64", "shape": [2305843009213693952], "data_offsets": [0, 8]}}""", null, "impossibly large")]
    [InlineData("""{"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}""", null, "appears twice")]
    [InlineData("""{"__metadata__": {"a": 1}, "x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}""", null, "not a string")]
    [InlineData("""{"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}""", 1000UL, "runs past the end")]
    [InlineData("""{"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}""", ulong.MaxValue, "runs past the end")]
    public void CorruptHeadersAreUserErrors(string header, ulong? headerLength, string? expected)
    {
        using var dir = new TempDir();
        string path = WriteRaw(dir, header, Encode(TensorType.F32, [1f, 2f]), headerLength);
        if (expected is null)
        {
            using var ok = SafetensorsFile.Open(path);
            Assert.Equal([1f, 2f], ok.Find("x")!.ToFloatArray());
            return;
        }
        var e = Assert.Throws<ShrinkException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.StartsWith(path + ": ", e.Message);
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void HeaderLengthAboveTheCapIsRefusedBeforeReading()
    {
        using var dir = new TempDir();
        string path = dir.File("huge.safetensors");
        using (var f = new FileStream(path, FileMode.CreateNew))
        {
            var length = new byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)SafetensorsFile.MaxHeaderBytes + 1);
            f.Write(length);
            f.SetLength(SafetensorsFile.MaxHeaderBytes + 64); // sparse: no real disk use
        }
        var e = Assert.Throws<ShrinkException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.Contains("exceeds", e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void WriterRejectsAWrongByteCountAndLeavesNothingBehind()
    {
        using var dir = new TempDir();
        string path = dir.File("out.safetensors");
        var e = Assert.Throws<InvalidOperationException>(() =>
            SafetensorsWriter.Write(path, [new SafetensorsWriter.Entry("w", TensorType.F32, [4], s => s.Write(new byte[15]))]));
        Assert.Contains("'w'", e.Message);
        Assert.Contains("16", e.Message);
        Assert.Empty(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void FailedOrCancelledWriteKeepsThePreviousFile()
    {
        using var dir = new TempDir();
        string path = dir.File("out.safetensors");
        SafetensorsWriter.Write(path, [EntryOf("old", TensorType.I8, [2], [7, 8])]);
        var before = File.ReadAllBytes(path);
        Assert.Throws<OperationCanceledException>(() => SafetensorsWriter.Write(path,
        [
            EntryOf("a", TensorType.I8, [1], [1]),
            new SafetensorsWriter.Entry("b", TensorType.F32, [1 << 20], s => { s.Write(new byte[1000]); throw new OperationCanceledException(); }),
        ]));
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Single(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void WriterStreamsLargeTensorsChunkByChunk()
    {
        using var dir = new TempDir();
        string path = dir.File("big.safetensors");
        const int rows = 512, cols = 1024;
        SafetensorsWriter.Write(path, [new SafetensorsWriter.Entry("big", TensorType.F32, [rows, cols], s =>
        {
            var row = new float[cols];
            for (int r = 0; r < rows; r++)
            {
                for (int c = 0; c < cols; c++) row[c] = r * 0.5f - c;
                s.Write(MemoryMarshal.AsBytes(row.AsSpan()));
            }
        })]);
        using var file = SafetensorsFile.Open(path);
        var t = file.Find("big")!;
        var dst = new float[cols];
        t.DequantizeRow(300, dst);
        Assert.Equal(150f, dst[0]);
        Assert.Equal(150f - 1023, dst[1023]);
    }

    [Fact]
    public void WriterRefusesTypesSafetensorsCannotHold()
    {
        using var dir = new TempDir();
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(dir.File("q.safetensors"),
            [new SafetensorsWriter.Entry("q", TensorType.Q4_0, [32], s => s.Write(new byte[18]))]));
        Assert.Empty(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void WritingIntoAMissingFolderIsAUserError()
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "no", "such", "x.safetensors");
        var e = Assert.Throws<ShrinkException>(() => SafetensorsWriter.Write(path, [EntryOf("a", TensorType.I8, [1], [1])]));
        Assert.StartsWith(path, e.Message);
    }
}
