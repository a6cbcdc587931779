using System.Buffers.Binary;
using LlmShrink.Formats;
using LlmShrink.Formats.Gguf;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>Every corrupt GGUF must fail as a one-line <see cref="ShrinkException"/> naming the file — never another exception.</summary>
public class GgufCorruptionTests
{
    /// <summary>Opens <paramref name="bytes"/> as a GGUF file and returns the user error it must raise.</summary>
    private static string OpenFails(byte[] bytes)
    {
        using var dir = new TempDir();
        string path = dir.File("corrupt.gguf");
        File.WriteAllBytes(path, bytes);
        var error = Assert.Throws<ShrinkException>(() => GgufFile.Open(path).Dispose());
        Assert.StartsWith(path + ": ", error.Message);
        Assert.DoesNotContain('\n', error.Message);
        return error.Message;
    }

    private static GgufTestWriter TwoTensors()
    {
        var writer = new GgufTestWriter()
            .AddString("general.name", "tiny")
            .AddStrings("tokens", "a", "b")
            .Add("nested", GgufValueType.Array, new GgufTestWriter.Arr(GgufValueType.Array, new GgufTestWriter.Arr(GgufValueType.Float32, 1f)));
        writer.AddTensor("q", [1, 32], TensorType.Q4_0, new byte[18]);
        writer.AddF32Tensor("w", [2, 8], i => i);
        return writer;
    }

    [Fact]
    public void Valid_base_file_opens()
    {
        using var dir = new TempDir();
        using var gguf = GgufFile.Open(TwoTensors().Save(dir.File("ok.gguf")));
        Assert.Equal(2, gguf.Tensors.Count);
        // The last tensor ends exactly at the end of the file, so any truncation cuts into something needed.
        Assert.Equal(gguf.File.Length, gguf.FindTensor("w")!.Offset + gguf.FindTensor("w")!.ByteLength);
    }

    [Fact]
    public void Truncation_at_every_byte_is_a_user_error()
    {
        var bytes = TwoTensors().ToBytes();
        using var dir = new TempDir();
        string path = dir.File("cut.gguf");
        for (int length = 0; length < bytes.Length; length++)
        {
            File.WriteAllBytes(path, bytes[..length]);
            var error = Assert.Throws<ShrinkException>(() => GgufFile.Open(path).Dispose());
            Assert.StartsWith(path + ": ", error.Message);
        }
    }

    [Fact]
    public void Bad_magic() =>
        Assert.Contains("not a GGUF file", OpenFails(new GgufTestWriter { Magic = 0x46554746 }.ToBytes()));

    [Fact]
    public void Version_1_is_rejected_with_a_clear_reason() =>
        Assert.Contains("GGUF version 1 is not supported", OpenFails(new GgufTestWriter { Version = 1 }.ToBytes()));

    [Fact]
    public void Unknown_future_version() =>
        Assert.Contains("unsupported GGUF version 4", OpenFails(new GgufTestWriter { Version = 4 }.ToBytes()));

    [Theory]
    [InlineData(ulong.MaxValue)]
    [InlineData(1ul << 40)]
    [InlineData(1000ul)]
    public void Huge_tensor_count(ulong count)
    {
        var writer = TwoTensors();
        writer.TensorCountOverride = count;
        Assert.Contains($"tensor count {count} cannot fit", OpenFails(writer.ToBytes()));
    }

    [Fact]
    public void Huge_metadata_count()
    {
        var writer = TwoTensors();
        writer.MetadataCountOverride = 1ul << 60;
        Assert.Contains("metadata count", OpenFails(writer.ToBytes()));
    }

    [Theory]
    [InlineData(ulong.MaxValue)]
    [InlineData(0x7FFF_FFFF_FFFF_FFFFul)]
    [InlineData(0x1_0000_0000ul)]
    public void Huge_string_length(ulong length)
    {
        var bytes = TwoTensors().ToBytes();
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(24), length); // the first key's length
        Assert.Contains($"string length {length}", OpenFails(bytes));
    }

    [Fact]
    public void Huge_array_count()
    {
        var writer = new GgufTestWriter().AddStrings("tokens", "a", "b");
        var bytes = writer.ToBytes();
        // header 24 + key (8 + 6) + value type 4 + element type 4 → the count
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(24 + 14 + 4 + 4), 1ul << 50);
        Assert.Contains("array element count", OpenFails(bytes));
    }

    [Fact]
    public void Unknown_metadata_value_type()
    {
        var bytes = new GgufTestWriter().AddUInt32("k", 1).ToBytes();
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(24 + 9), 13); // type tag after the 1-char key
        Assert.Contains("unknown metadata value type 13", OpenFails(bytes));
    }

    [Fact]
    public void Arrays_nested_too_deep()
    {
        object value = new GgufTestWriter.Arr(GgufValueType.UInt8);
        for (int i = 0; i < 20; i++) value = new GgufTestWriter.Arr(GgufValueType.Array, value);
        Assert.Contains("nested", OpenFails(new GgufTestWriter().Add("deep", GgufValueType.Array, value).ToBytes()));
    }

    [Fact]
    public void Names_from_the_file_are_escaped_and_cut_in_messages()
    {
        string key = "bad\nkey" + new string('x', 200);
        string message = OpenFails(new GgufTestWriter().AddUInt32(key, 1).AddUInt32(key, 2).ToBytes());
        Assert.Contains("'bad\\u000Akey" + new string('x', 73) + "…' appears twice", message);
    }

    [Fact]
    public void Duplicate_metadata_key() =>
        Assert.Contains("'k' appears twice", OpenFails(new GgufTestWriter().AddUInt32("k", 1).AddUInt32("k", 2).ToBytes()));

    [Theory]
    [InlineData(24u)]
    [InlineData(0u)]
    public void Alignment_not_a_power_of_two(uint alignment) =>
        Assert.Contains("not a power of two", OpenFails(TwoTensors().AddUInt32(GgufFile.AlignmentKey, alignment).ToBytes()));

    [Fact]
    public void Offset_past_the_end()
    {
        var writer = TwoTensors();
        writer.Tensors[1].OffsetOverride = 1 << 20;
        Assert.Contains("tensor 'w': data (offset 1048576, 64 bytes) lies past the end", OpenFails(writer.ToBytes()));
    }

    [Fact]
    public void Offset_that_would_overflow()
    {
        var writer = TwoTensors();
        writer.Tensors[1].OffsetOverride = ulong.MaxValue - 31; // a multiple of 32
        Assert.Contains("lies past the end", OpenFails(writer.ToBytes()));
    }

    [Fact]
    public void Misaligned_offset()
    {
        var writer = TwoTensors();
        writer.Tensors[1].OffsetOverride = 36;
        Assert.Contains("tensor 'w': data offset 36 is not a multiple of the alignment 32", OpenFails(writer.ToBytes()));
    }

    [Fact]
    public void Overlapping_tensors()
    {
        var writer = TwoTensors();
        writer.Tensors[1].OffsetOverride = 0; // 'w' placed on top of 'q'
        Assert.Contains("overlap", OpenFails(writer.ToBytes()));
    }

    [Theory]
    [InlineData(4u, "Q4_2")]     // long removed from ggml
    [InlineData(9u, "Q8_1")]     // an intermediate type never stored in models
    [InlineData(34u, "TQ1_0")]   // ternary, not read yet
    public void Unreadable_type_names_the_tensor_and_the_type(uint typeId, string typeName)
    {
        var writer = TwoTensors();
        writer.Tensors.Add(new GgufTestWriter.Tensor { Name = "odd", Ne = [32], TypeId = typeId, Data = new byte[32] });
        Assert.Contains($"tensor 'odd': has ggml type {typeName} (id {typeId}), which LlmShrink cannot read", OpenFails(writer.ToBytes()));
    }

    [Fact]
    public void Unknown_type_id_names_the_tensor_and_the_id()
    {
        var writer = TwoTensors();
        writer.Tensors.Add(new GgufTestWriter.Tensor { Name = "odd", Ne = [32], TypeId = 99, Data = new byte[32] });
        Assert.Contains("tensor 'odd': has unknown ggml type id 99", OpenFails(writer.ToBytes()));
    }

    [Fact]
    public void Five_dimensions()
    {
        var writer = TwoTensors();
        writer.Tensors.Add(new GgufTestWriter.Tensor { Name = "five", Ne = [1, 1, 1, 1, 1], TypeId = 0, Data = new byte[4] });
        Assert.Contains("tensor 'five': has 5 dimensions", OpenFails(writer.ToBytes()));
    }

    [Fact]
    public void Duplicate_tensor_name()
    {
        var writer = TwoTensors();
        writer.AddF32Tensor("w", [8], i => i);
        Assert.Contains("tensor 'w': the tensor name appears twice", OpenFails(writer.ToBytes()));
    }

    [Fact]
    public void Row_not_a_whole_number_of_blocks()
    {
        var writer = TwoTensors();
        writer.Tensors.Add(new GgufTestWriter.Tensor { Name = "ragged", Ne = [16], TypeId = 2, Data = new byte[18] });
        Assert.Contains("not a multiple of the Q4_0 block size 32", OpenFails(writer.ToBytes()));
    }

    [Theory]
    [InlineData(1ul << 40, 1ul << 40)]       // product overflows a long
    [InlineData(1ul << 31, 1ul << 31)]       // 2^62 floats: 2^64 bytes would wrap to 0
    [InlineData(ulong.MaxValue, 1ul)]        // a dimension that is negative as a signed number
    public void Impossible_shapes(ulong ne0, ulong ne1)
    {
        var writer = TwoTensors();
        writer.Tensors.Add(new GgufTestWriter.Tensor { Name = "huge", Ne = [ne0, ne1], TypeId = 0, Data = new byte[32] });
        Assert.Contains("tensor 'huge'", OpenFails(writer.ToBytes()));
    }

    [Fact]
    public void Empty_and_missing_files()
    {
        Assert.Contains("truncated", OpenFails([]));
        using var dir = new TempDir();
        string missing = dir.File("nope.gguf");
        Assert.Equal($"{missing}: file not found", Assert.Throws<ShrinkException>(() => GgufFile.Open(missing)).Message);
    }

    /// <summary>
    /// Thousands of random mutations of a small but complete model (bit flips, overwritten runs, truncations, spliced
    /// huge numbers). Each must either open — and then every tensor decodes and every loader step works or fails
    /// cleanly — or fail as a <see cref="ShrinkException"/> naming the file.
    /// </summary>
    [Fact]
    public void Fuzzed_models_fail_only_with_user_errors()
    {
        var original = GgufTestModels.Writer(new GgufTestModels.Spec(Layers: 1)).ToBytes();
        var random = new Random(20240611);
        using var dir = new TempDir();
        int opened = 0, rejected = 0;
        for (int iteration = 0; iteration < 2000; iteration++)
        {
            // A fresh name each time: rewriting a file that was just mapped is several times slower.
            string path = dir.File($"fuzz{iteration}.gguf");
            File.WriteAllBytes(path, Mutate(original, random));
            try
            {
                using var gguf = GgufFile.Open(path);
                foreach (var (_, value) in gguf.Metadata) _ = value.Describe();
                foreach (var tensor in gguf.Tensors) _ = tensor.ToFloatArray();
                opened++;
                _ = GgufTestModels.Read(gguf);
            }
            catch (ShrinkException e)
            {
                Assert.StartsWith(path + ": ", e.Message);
                Assert.DoesNotContain('\n', e.Message);
                Assert.True(e.Message.Length < path.Length + 400, e.Message);
                rejected++;
            }
        }
        // Both outcomes must actually be exercised for the test to mean anything.
        Assert.True(opened > 100 && rejected > 100, $"opened {opened}, rejected {rejected}");
    }

    private static byte[] Mutate(byte[] original, Random random)
    {
        var bytes = (byte[])original.Clone();
        switch (random.Next(4))
        {
            case 0: // flip a few bits, mostly in the header where they matter
                for (int i = random.Next(1, 5); i > 0; i--)
                {
                    int at = random.Next(random.Next(2) == 0 ? Math.Min(bytes.Length, 1200) : bytes.Length);
                    bytes[at] ^= (byte)(1 << random.Next(8));
                }
                return bytes;
            case 1: // overwrite a run with 0xFF or 0x00
                {
                    int at = random.Next(Math.Min(bytes.Length, 1200));
                    byte fill = random.Next(2) == 0 ? (byte)0xFF : (byte)0x00;
                    for (int i = at; i < Math.Min(bytes.Length, at + random.Next(1, 9)); i++) bytes[i] = fill;
                    return bytes;
                }
            case 2: // splice a huge or boundary number over 8 aligned-ish bytes
                {
                    int at = random.Next(Math.Min(bytes.Length, 1200) - 8);
                    ulong[] values = [ulong.MaxValue, 1ul << 63, 1ul << 32, (ulong)bytes.Length, 0, 5, uint.MaxValue];
                    BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(at), values[random.Next(values.Length)]);
                    return bytes;
                }
            default: // truncate
                return bytes[..random.Next(bytes.Length)];
        }
    }
}
