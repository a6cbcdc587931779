using LlmShrink.Formats;
using LlmShrink.Formats.Gguf;
using Xunit;

namespace LlmShrink.Tests;

public class GgufFileTests
{
    [Fact]
    public void Stories260K_parses_header_metadata_and_tensors()
    {
        using var gguf = GgufFile.Open(SharedData.Stories260K);
        Assert.Equal(3u, gguf.Version);
        Assert.Equal(32u, gguf.Alignment);
        Assert.Equal(19, gguf.Metadata.Count);
        Assert.Equal(2 + 5 * 9 + 1, gguf.Tensors.Count);

        var meta = gguf.Metadata;
        Assert.Equal("llama", meta.GetString("general.architecture"));
        Assert.Equal("llama", meta.GetString("tokenizer.ggml.model"));
        Assert.Equal(64u, meta.GetUInt32("llama.embedding_length"));
        Assert.Equal(5u, meta.GetUInt32("llama.block_count"));
        Assert.Equal(8u, meta.GetUInt32("llama.attention.head_count"));
        Assert.Equal(4u, meta.GetUInt32("llama.attention.head_count_kv"));
        Assert.Equal(172u, meta.GetUInt32("llama.feed_forward_length"));
        Assert.Equal(2048, meta.GetInt32("llama.context_length"));
        Assert.Equal(1e-5f, meta.GetFloat("llama.attention.layer_norm_rms_epsilon"));

        var tokens = meta.GetStringArray("tokenizer.ggml.tokens");
        Assert.Equal(512, tokens.Length);
        Assert.Equal(["<unk>", "<s>", "</s>", "<0x00>"], tokens[..4]);
        Assert.Equal(512, meta.GetFloatArray("tokenizer.ggml.scores").Length);
        Assert.Equal([2, 3, 3, 6], meta.GetInt32Array("tokenizer.ggml.token_type")[..4]);
        // uint32 −1 ("no separator") does not fit an int: a typed accessor says so instead of wrapping around.
        Assert.Equal(uint.MaxValue, meta.GetUInt32("tokenizer.ggml.seperator_token_id"));
        Assert.Contains("out of range", Assert.Throws<ShrinkException>(() => meta.GetInt32("tokenizer.ggml.seperator_token_id")).Message);

        Assert.All(gguf.Tensors, t => Assert.Equal(TensorType.F32, t.Type));
        // ne = [64, 512] innermost first → shape [512, 64] outermost first.
        Assert.Equal([512L, 64L], gguf.FindTensor("token_embd.weight")!.Shape);
        Assert.Equal([64L], gguf.FindTensor("output_norm.weight")!.Shape);
        Assert.Equal([32L, 64L], gguf.FindTensor("blk.0.attn_k.weight")!.Shape);
        Assert.Equal([172L, 64L], gguf.FindTensor("blk.4.ffn_gate.weight")!.Shape);
        Assert.Equal([64L, 172L], gguf.FindTensor("blk.4.ffn_down.weight")!.Shape);
        // Data starts at the first multiple of 32 after the 14152-byte header; the last tensor ends the file.
        Assert.Equal(14176, gguf.DataOffset);
        var last = gguf.Tensors.MaxBy(t => t.Offset)!;
        Assert.Equal(gguf.File.Length, last.Offset + last.ByteLength);
        Assert.Equal(gguf.DataOffset + 131072, gguf.FindTensor("output_norm.weight")!.Offset);
    }

    [Fact]
    public void Stories260K_norm_weights_read_as_plausible_floats()
    {
        using var gguf = GgufFile.Open(SharedData.Stories260K);
        var norm = gguf.FindTensor("output_norm.weight")!.ToFloatArray();
        Assert.Equal(64, norm.Length);
        Assert.All(norm, v => Assert.True(float.IsFinite(v) && v > 0f && v < 100f, $"norm weight {v}"));
    }

    [Theory]
    [InlineData(2u)]
    [InlineData(3u)]
    public void Every_metadata_type_round_trips(uint version)
    {
        using var dir = new TempDir();
        var writer = new GgufTestWriter { Version = version }
            .Add("u8", GgufValueType.UInt8, (byte)200)
            .Add("i8", GgufValueType.Int8, (sbyte)-100)
            .Add("u16", GgufValueType.UInt16, (ushort)60000)
            .Add("i16", GgufValueType.Int16, (short)-30000)
            .Add("u32", GgufValueType.UInt32, 4000000000u)
            .Add("i32", GgufValueType.Int32, -2000000000)
            .Add("f32", GgufValueType.Float32, 1.5f)
            .Add("bool", GgufValueType.Bool, true)
            .Add("str", GgufValueType.String, "héllo ▁world")
            .Add("u64", GgufValueType.UInt64, ulong.MaxValue)
            .Add("i64", GgufValueType.Int64, long.MinValue)
            .Add("f64", GgufValueType.Float64, 0.1)
            .AddStrings("strs", "a", "", "ü")
            .AddFloats("floats", 0.5f, -2f)
            .AddInt32s("ints", 7, -8, 9)
            .Add("u8s", GgufValueType.Array, new GgufTestWriter.Arr(GgufValueType.UInt8, (byte)1, (byte)255))
            .Add("bools", GgufValueType.Array, new GgufTestWriter.Arr(GgufValueType.Bool, true, false, true))
            .Add("f64s", GgufValueType.Array, new GgufTestWriter.Arr(GgufValueType.Float64, 0.25, -1.0))
            .Add("u64s", GgufValueType.Array, new GgufTestWriter.Arr(GgufValueType.UInt64, 3ul, 4ul))
            .Add("nested", GgufValueType.Array, new GgufTestWriter.Arr(GgufValueType.Array,
                new GgufTestWriter.Arr(GgufValueType.Int32, 1, 2),
                new GgufTestWriter.Arr(GgufValueType.String, "x"),
                new GgufTestWriter.Arr(GgufValueType.Array, new GgufTestWriter.Arr(GgufValueType.Float32, 3f))))
            .Add("empty", GgufValueType.Array, new GgufTestWriter.Arr(GgufValueType.UInt32));
        string path = writer.Save(dir.File("meta.gguf"));

        using var gguf = GgufFile.Open(path);
        var meta = gguf.Metadata;
        Assert.Equal(version, gguf.Version);
        Assert.Empty(gguf.Tensors);
        Assert.Equal(21, meta.Count);
        Assert.Equal(["u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "u64", "i64", "f64"],
            meta.Take(12).Select(kv => kv.Key));

        Assert.Equal((byte)200, meta.Get("u8").Raw);
        Assert.Equal(GgufValueType.UInt8, meta.Get("u8").Type);
        Assert.Equal((sbyte)-100, meta.Get("i8").Raw);
        Assert.Equal((ushort)60000, meta.Get("u16").Raw);
        Assert.Equal((short)-30000, meta.Get("i16").Raw);
        Assert.Equal(4000000000u, meta.GetUInt32("u32"));
        Assert.Equal(-2000000000, meta.GetInt32("i32"));
        Assert.Equal(200, meta.GetInt32("u8"));
        Assert.Equal(-100, meta.GetInt32("i8"));
        Assert.Equal(1.5f, meta.GetFloat("f32"));
        Assert.True(meta.GetBool("bool"));
        Assert.Equal("héllo ▁world", meta.GetString("str"));
        Assert.Equal(ulong.MaxValue, meta.Get("u64").Raw);
        Assert.Equal(long.MinValue, meta.Get("i64").Raw);
        Assert.Equal(0.1, meta.Get("f64").Raw);
        Assert.Equal(0.1f, meta.GetFloat("f64"));

        Assert.Equal(["a", "", "ü"], meta.GetStringArray("strs"));
        Assert.Equal([0.5f, -2f], meta.GetFloatArray("floats"));
        Assert.Equal([7, -8, 9], meta.GetInt32Array("ints"));
        Assert.Equal([1, 255], meta.GetInt32Array("u8s"));
        Assert.Equal(new[] { true, false, true }, meta.Get("bools").Raw);
        Assert.Equal([0.25f, -1f], meta.GetFloatArray("f64s"));
        Assert.Equal([3, 4], meta.GetInt32Array("u64s"));
        Assert.Empty(meta.GetInt32Array("empty"));

        var nested = (GgufValue[])meta.Get("nested").Raw;
        Assert.Equal(GgufValueType.Array, meta.Get("nested").ElementType);
        Assert.Equal(3, nested.Length);
        Assert.Equal(new[] { 1, 2 }, nested[0].Raw);
        Assert.Equal(new[] { "x" }, nested[1].Raw);
        Assert.Equal(new[] { 3f }, ((GgufValue[])nested[2].Raw)[0].Raw);
        Assert.Equal("[array × 3: [int32 × 2: 1, 2], [string × 1: \"x\"], [array × 1: [float32 × 1: 3]]]", meta.Get("nested").Describe());
    }

    [Fact]
    public void Typed_accessors_report_missing_keys_and_wrong_types_with_the_file()
    {
        using var dir = new TempDir();
        string path = new GgufTestWriter().AddString("name", "x").AddFloats("floats", 1f).Save(dir.File("typed.gguf"));
        using var gguf = GgufFile.Open(path);
        var meta = gguf.Metadata;

        Assert.False(meta.TryGetUInt32("absent", out _));
        Assert.Equal($"{path}: missing metadata key 'absent'", Assert.Throws<ShrinkException>(() => meta.GetString("absent")).Message);
        Assert.Equal($"{path}: metadata key 'name' is string, expected an integer", Assert.Throws<ShrinkException>(() => meta.TryGetUInt32("name", out _)).Message);
        Assert.Equal($"{path}: metadata key 'floats' is array of float32, expected array of string", Assert.Throws<ShrinkException>(() => meta.GetStringArray("floats")).Message);
        Assert.Throws<ShrinkException>(() => meta.GetInt32Array("floats"));
        Assert.Throws<ShrinkException>(() => meta.GetBool("name"));
        Assert.Throws<ShrinkException>(() => meta.GetFloat("name"));
    }

    [Fact]
    public void Quantized_and_plain_tensors_read_back_through_the_mapping()
    {
        // A 2×64 Q8_0 tensor (2 blocks per row), a 1×256 Q4_K tensor, and a 3-element F16 vector, with a
        // 64-byte alignment declared in the metadata.
        var q8 = new byte[4 * 34];
        for (int b = 0; b < 4; b++)
        {
            q8[34 * b] = 0x00; q8[34 * b + 1] = 0x3C; // d = 1
            for (int j = 0; j < 32; j++) q8[34 * b + 2 + j] = (byte)(b * 10 + j % 3); // value = 10b + j%3
        }
        var q4k = new byte[144];
        q4k[1] = 0x3C;         // d = 1, dmin = 0
        for (int i = 0; i < 4; i++) q4k[4 + i] = 1; // scales 0..3 = 1, mins 0..3 = 0
        q4k[4 + 8] = 0x01;     // scale of sub-block 4 = 1; sub-blocks 5..7 scale 0
        for (int i = 0; i < 128; i++) q4k[16 + i] = 0x21; // low nibble 1, high nibble 2
        var f16 = new byte[] { 0x00, 0x3C, 0x00, 0xC0, 0x00, 0x38 }; // 1, −2, 0.5

        var writer = new GgufTestWriter { Alignment = 64 }.AddUInt32(GgufFile.AlignmentKey, 64);
        writer.AddTensor("q8", [2, 64], TensorType.Q8_0, q8);
        writer.AddTensor("q4k", [1, 256], TensorType.Q4_K, q4k);
        writer.AddTensor("f16", [3], TensorType.F16, f16);
        using var dir = new TempDir();
        using var gguf = GgufFile.Open(writer.Save(dir.File("quant.gguf")));

        Assert.Equal(64u, gguf.Alignment);
        Assert.Equal(0, gguf.DataOffset % 64);
        Assert.All(gguf.Tensors, t => Assert.Equal(0, (t.Offset - gguf.DataOffset) % 64));

        var q8Tensor = gguf.FindTensor("q8")!;
        Assert.Equal(TensorType.Q8_0, q8Tensor.Type);
        Assert.Equal([2L, 64L], q8Tensor.Shape);
        var row = new float[64];
        q8Tensor.DequantizeRow(1, row); // blocks 2 and 3
        Assert.Equal(Enumerable.Range(0, 64).Select(i => (float)((2 + i / 32) * 10 + i % 32 % 3)), row);

        // Q4_K: sub-blocks 0,2 (low nibbles, q = 1) and 1,3 (high, q = 2) have scale 1 → 1, 2, 1, 2;
        // sub-block 4 (scale 1 from byte 8's low nibble) → 1; sub-blocks 5..7 have scale 0 → 0.
        var q4 = gguf.FindTensor("q4k")!.ToFloatArray();
        Assert.Equal(new float[] { 1, 2, 1, 2, 1, 0, 0, 0 }, Enumerable.Range(0, 8).Select(s => q4[32 * s]));
        Assert.All(Enumerable.Range(0, 256), i => Assert.Equal(q4[i / 32 * 32], q4[i]));

        Assert.Equal([1f, -2f, 0.5f], gguf.FindTensor("f16")!.ToFloatArray());
    }

    [Fact]
    public void Tensor_with_zero_elements_and_shared_offset_is_not_an_overlap()
    {
        var writer = new GgufTestWriter();
        writer.AddF32Tensor("a", [4], i => i);
        writer.AddTensor("empty", [0, 8], TensorType.F32, []);
        using var dir = new TempDir();
        using var gguf = GgufFile.Open(writer.Save(dir.File("empty.gguf")));
        Assert.Equal(0, gguf.FindTensor("empty")!.ElementCount);
        Assert.Equal([0f, 1f, 2f, 3f], gguf.FindTensor("a")!.ToFloatArray());
    }
}
