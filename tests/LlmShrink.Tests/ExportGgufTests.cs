using LlmShrink.Export;
using LlmShrink.Formats;
using LlmShrink.Formats.Gguf;
using LlmShrink.Model;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>GGUF exports of the real sample models, loaded back with the project's own readers.</summary>
public class ExportGgufTests
{
    internal static float[] Logits(LoadedModel model, int[] tokens)
    {
        using var transformer = new Transformer(model, threads: 1);
        var logits = new float[tokens.Length * model.Config.VocabSize];
        transformer.Forward(tokens, transformer.NewCache(tokens.Length), logits);
        return logits;
    }

    /// <summary>The source tensor's values in the row order the export should have written them.</summary>
    internal static float[] Expected(StoredTensor source, Func<long, long>? sourceRow)
    {
        var values = source.ToFloatArray();
        if (sourceRow is null) return values;
        int columns = (int)source.Columns;
        var reordered = new float[values.Length];
        for (long r = 0; r < source.Rows; r++)
            values.AsSpan((int)(sourceRow(r) * columns), columns).CopyTo(reordered.AsSpan((int)(r * columns), columns));
        return reordered;
    }

    internal static bool IsQOrK(string name) => name.EndsWith(TensorNames.Q, StringComparison.Ordinal) || name.EndsWith(TensorNames.K, StringComparison.Ordinal);

    private static readonly int[] Prompt = [1, 403, 407, 261, 378, 426, 395, 271];

    [Fact]
    public void Stories260K_F32_export_is_identical_tensor_for_tensor_and_logit_for_logit()
    {
        using var dir = new TempDir();
        using var source = ModelLoader.Load(SharedData.Stories260K);
        string output = dir.File("stories.gguf");
        GgufExporter.Export(source, TensorType.F32, output);
        using var exported = GgufModelLoader.Load(output);

        Assert.Equal(source.Config, exported.Config with { });
        Assert.Equal(source.Weights.Count, exported.Weights.Count);
        foreach (string name in source.Weights.Names)
            Assert.Equal(source.Weights.Get(name).ToFloatArray(), exported.Weights.Get(name).ToFloatArray());
        Assert.Equal(Logits(source, Prompt), Logits(exported, Prompt));

        var text = "Once upon a time, there was a little girl.";
        Assert.Equal(source.RequireTokenizer().Encode(text, true), exported.RequireTokenizer().Encode(text, true));
        using var gguf = GgufFile.Open(output);
        Assert.Equal(0u, gguf.Metadata.GetUInt32("general.file_type"));
        Assert.Equal("llama", gguf.Metadata.GetString("general.architecture"));
        Assert.Equal(32u, gguf.Alignment);
        Assert.All(gguf.Tensors, t => Assert.Equal(0, (t.Offset - gguf.DataOffset) % 32));
    }

    [Fact]
    public void TinyLit_F32_export_permutes_q_and_k_into_llama_cpp_order_and_computes_the_same_function()
    {
        using var dir = new TempDir();
        using var source = ModelLoader.Load(SharedData.TinyLit);
        string output = dir.File("tinylit.gguf");
        GgufExporter.Export(source, TensorType.F32, output);
        using var exported = GgufModelLoader.Load(output);

        var c = source.Config;
        Assert.Equal(RopeStyle.Interleaved, exported.Config.RopeStyle);
        Assert.Equal(c with { RopeStyle = RopeStyle.Interleaved }, exported.Config);
        var permute = RopeRowOrder.SourceRow(RopeStyle.RotateHalf, RopeStyle.Interleaved, c.HeadDim);
        foreach (string name in source.Weights.Names)
            Assert.Equal(Expected(source.Weights.Get(name), IsQOrK(name) ? permute : null), exported.Weights.Get(name).ToFloatArray());

        // Row order inside a head changes the order q·k sums over the head, so logits agree to rounding, not bit for bit.
        var expected = Logits(source, Prompt);
        var actual = Logits(exported, Prompt);
        float worst = expected.Zip(actual, (a, b) => Math.Abs(a - b)).Max();
        Assert.True(worst < 1e-4f * (1 + expected.Max(Math.Abs)), $"logits differ by {worst}");

        var text = "The old lighthouse keeper watched the storm roll in.";
        Assert.Equal(source.RequireTokenizer().Encode(text, true), exported.RequireTokenizer().Encode(text, true));
        using var gguf = GgufFile.Open(output);
        Assert.Equal("llama", gguf.Metadata.GetString("tokenizer.ggml.model"));
        Assert.Equal(32u, gguf.Metadata.GetUInt32("llama.rope.dimension_count"));
        Assert.False(gguf.Metadata.Contains("llama.attention.key_length")); // head_dim = hidden / heads: implied
        Assert.Equal([256L, 4096L], gguf.FindTensor("token_embd.weight")!.Shape.Reverse()); // ne = [hidden, vocab]
    }

    [Fact]
    public void F16_export_rounds_matrices_to_fp16_and_keeps_vectors_f32()
    {
        using var dir = new TempDir();
        using var source = ModelLoader.Load(SharedData.Stories260K);
        string output = dir.File("stories-f16.gguf");
        GgufExporter.Export(source, TensorType.F16, output);
        using var exported = GgufModelLoader.Load(output);
        foreach (string name in source.Weights.Names)
        {
            var original = source.Weights.Get(name);
            var written = exported.Weights.Get(name);
            bool matrix = original.Shape.Length == 2;
            Assert.Equal(matrix ? TensorType.F16 : TensorType.F32, written.Type);
            var expected = original.ToFloatArray();
            if (matrix) expected = expected.Select(v => (float)(Half)v).ToArray();
            Assert.Equal(expected, written.ToFloatArray());
        }
        using var gguf = GgufFile.Open(output);
        Assert.Equal(1u, gguf.Metadata.GetUInt32("general.file_type"));
    }

    /// <summary>Every exported tensor holds exactly the bytes the encoder gives for the (reordered) source rows.</summary>
    private static void AssertEncodedExactly(LoadedModel source, LoadedModel exported, TensorType requested, RopeStyle targetStyle)
    {
        var permute = RopeRowOrder.SourceRow(source.Config.RopeStyle, targetStyle, source.Config.HeadDim);
        foreach (string name in source.Weights.Names)
        {
            var original = source.Weights.Get(name);
            var written = exported.Weights.Get(name);
            var type = GgufExporter.ChooseType(original.Shape, requested);
            Assert.Equal(type, written.Type);
            var values = Expected(original, IsQOrK(name) ? permute : null);
            int columns = (int)original.Columns;
            var row = new byte[TensorTypes.ByteCount(type, columns)];
            for (long r = 0; r < original.Rows; r++)
            {
                TensorEncoding.EncodeRow(type, values.AsSpan((int)(r * columns), columns), row);
                Assert.True(row.AsSpan().SequenceEqual(written.RowBytes(r)), $"{name} row {r} ({type})");
            }
        }
    }

    [Theory]
    [InlineData(TensorType.Q8_0)]
    [InlineData(TensorType.Q4_K)]
    public void Quantized_exports_hold_exactly_what_the_encoder_produces(TensorType type)
    {
        using var dir = new TempDir();
        using var source = ModelLoader.Load(SharedData.Stories260K);
        string output = dir.File($"stories-{type}.gguf");
        GgufExporter.Export(source, type, output);
        using var exported = GgufModelLoader.Load(output);
        AssertEncodedExactly(source, exported, type, RopeStyle.Interleaved);

        // stories260K's FFN is 172 wide: ffn_down rows fit no block size (→ F16); Q4_K's 64-wide rows fall back to Q5_0.
        Assert.Equal(TensorType.F16, exported.Weights.Get(TensorNames.Layer(0, TensorNames.Down)).Type);
        Assert.Equal(type == TensorType.Q4_K ? TensorType.Q5_0 : TensorType.Q8_0, exported.Weights.Get(TensorNames.Layer(0, TensorNames.Up)).Type);

        // The quantized model still predicts what the original does.
        var expected = Logits(source, Prompt);
        var actual = Logits(exported, Prompt);
        int vocab = source.Config.VocabSize, agree = 0;
        for (int t = 0; t < Prompt.Length; t++)
            if (ArgMax(expected.AsSpan(t * vocab, vocab)) == ArgMax(actual.AsSpan(t * vocab, vocab))) agree++;
        Assert.True(agree >= Prompt.Length - 2, $"top-1 agrees on {agree} of {Prompt.Length} positions");

        // Re-exporting at the same type copies the blocks unchanged.
        string again = dir.File($"again-{type}.gguf");
        GgufExporter.Export(exported, type, again);
        using var reexported = GgufModelLoader.Load(again);
        foreach (string name in exported.Weights.Names)
        {
            var a = exported.Weights.Get(name);
            var b = reexported.Weights.Get(name);
            for (long r = 0; r < a.Rows; r++) Assert.True(a.RowBytes(r).SequenceEqual(b.RowBytes(r)), $"{name} row {r}");
        }
    }

    [Fact]
    public void Q2_K_and_Q3_K_rows_that_fit_no_super_block_fall_back_to_Q4_0()
    {
        // llama-quantize's fallback for both is IQ4_NL, which cannot be written here; Q4_0 has its size.
        Assert.Equal(TensorType.Q4_0, GgufExporter.ChooseType([8, 64], TensorType.Q2_K));
        Assert.Equal(TensorType.Q4_0, GgufExporter.ChooseType([8, 64], TensorType.Q3_K));
        Assert.Equal(TensorType.F16, GgufExporter.ChooseType([8, 172], TensorType.Q3_K)); // not even 32 wide
        Assert.Equal(TensorType.Q3_K, GgufExporter.ChooseType([8, 768], TensorType.Q3_K));
        Assert.Equal(TensorType.F32, GgufExporter.ChooseType([768], TensorType.Q2_K));     // vectors stay F32
    }

    private static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }

    [Fact]
    public void TinyLit_Q6_K_export_loads_and_matches_the_encoder()
    {
        using var dir = new TempDir();
        using var source = ModelLoader.Load(SharedData.TinyLit);
        string output = dir.File("tinylit-q6k.gguf");
        GgufExporter.Export(source, TensorType.Q6_K, output);
        using var exported = GgufModelLoader.Load(output);
        AssertEncodedExactly(source, exported, TensorType.Q6_K, RopeStyle.Interleaved);
        using var gguf = GgufFile.Open(output);
        Assert.Equal(18u, gguf.Metadata.GetUInt32("general.file_type"));
        Assert.Equal(2u, gguf.Metadata.GetUInt32("general.quantization_version"));
    }

    /// <summary>
    /// tinylit-8m with every matrix Q3_K or Q2_K — token_embd and output included, which llama.cpp's own Q3_K_M and Q2_K
    /// mixes keep at more bits — holds exactly the encoder's bytes, carries llama.cpp's file type, and still models the
    /// text: perplexity on the first 20 chunks of the eval text (llama.cpp protocol, context 256) stays within the given
    /// factor of the float model's. Measured: float 75.149, Q3_K 75.495 (+0.5 %), Q2_K 79.504 (+5.8 %).
    /// </summary>
    [Theory]
    [InlineData(TensorType.Q3_K, 11u, 1.02)]
    [InlineData(TensorType.Q2_K, 10u, 1.10)]
    public void TinyLit_low_bit_K_quant_export_matches_the_encoder_and_keeps_perplexity_near_float(TensorType type, uint fileType, double factor)
    {
        using var dir = new TempDir();
        using var source = ModelLoader.Load(SharedData.TinyLit);
        string output = dir.File($"tinylit-{type}.gguf");
        GgufExporter.Export(source, type, output);
        using var exported = GgufModelLoader.Load(output);
        AssertEncodedExactly(source, exported, type, RopeStyle.Interleaved);
        using (var gguf = GgufFile.Open(output)) Assert.Equal(fileType, gguf.Metadata.GetUInt32("general.file_type"));

        using var transformer = new Transformer(exported);
        double perplexity = TinyLitCompression.Perplexity(transformer), reference = TinyLitCompression.FloatPerplexity.Value;
        Console.WriteLine($"tinylit {type} export: perplexity {perplexity:F3}, float {reference:F3}");
        Assert.True(perplexity < factor * reference, $"{type} perplexity {perplexity:F2} vs float {reference:F2}");
    }

    [Fact]
    public void Refuses_to_overwrite_its_input_even_through_a_symlink()
    {
        using var dir = new TempDir();
        string copy = dir.File("model.gguf");
        File.Copy(SharedData.Stories260K, copy);
        string link = dir.File("link.gguf");
        File.CreateSymbolicLink(link, copy);
        using var source = ModelLoader.Load(copy);
        var direct = Assert.Throws<ShrinkException>(() => GgufExporter.Export(source, TensorType.F32, copy));
        Assert.Contains("refusing to overwrite an input", direct.Message);
        Assert.Throws<ShrinkException>(() => GgufExporter.Export(source, TensorType.F32, link));
        Assert.Equal(File.ReadAllBytes(SharedData.Stories260K), File.ReadAllBytes(copy));
        Assert.Equal(2, Directory.GetFiles(dir.Path).Length); // no temporary file left behind
    }

    [Fact]
    public void Rejects_types_it_cannot_write()
    {
        using var dir = new TempDir();
        using var source = ModelLoader.Load(SharedData.Stories260K);
        var error = Assert.Throws<ShrinkException>(() => GgufExporter.Export(source, TensorType.I8, dir.File("x.gguf")));
        Assert.Contains("--type I8", error.Message);
        Assert.Empty(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void Llama3_rope_factors_follow_the_converter_formula()
    {
        var c = new ModelConfig
        {
            Architecture = "llama", HiddenSize = 2048, IntermediateSize = 8192, NumLayers = 16, NumHeads = 32, NumKvHeads = 8,
            HeadDim = 64, VocabSize = 128256, RopeTheta = 500000f,
        };
        var factors = GgufExporter.Llama3RopeFactors(c, new Llama3RopeScaling(32f, 1f, 4f, 8192));
        Assert.Equal(32, factors.Length);
        Assert.Equal(1f, factors[0]);        // highest frequency: wavelength 2π, untouched
        Assert.Equal(32f, factors[^1]);      // lowest: wavelength far beyond 8192, fully scaled
        for (int i = 1; i < factors.Length; i++) Assert.True(factors[i] >= factors[i - 1]);
        // i = 16: wavelength 2π·500000^(32/64) ≈ 4443 lies between 8192/4 and 8192, so it is interpolated.
        double wavelength16 = 2 * Math.PI * Math.Pow(500000, 32.0 / 64);
        double smooth = (8192 / wavelength16 - 1) / 3;
        Assert.Equal((float)(1 / ((1 - smooth) / 32 + smooth)), factors[16], 5);
    }
}
