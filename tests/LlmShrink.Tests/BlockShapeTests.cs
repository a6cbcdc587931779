using LlmShrink.Evaluation;
using LlmShrink.Export;
using LlmShrink.Formats;
using LlmShrink.Formats.Gguf;
using LlmShrink.Model;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>
/// Models whose blocks differ in width, built from tinylit-8m by <see cref="StructuredSlicing"/>, written as Hugging Face
/// folders and GGUF files by the project's writers and loaded back. The key property: removing a KV-head group
/// (an MLP channel, a whole block) physically computes what the original computes with the o_proj columns of that
/// group's query heads (the channel's down_proj column, the block's o_proj and down_proj) set to zero.
/// </summary>
public class BlockShapeTests
{
    /// <summary>Weights by canonical name: shape and float32 values.</summary>
    private sealed class Weights : Dictionary<string, (long[] Shape, float[] Data)>
    {
        public Weights() { }
        public Weights(LoadedModel model)
        {
            foreach (string name in model.Weights.Names) this[name] = (model.Weights.Get(name).Shape, model.Weights.Get(name).ToFloatArray());
        }
        public Weights Copy()
        {
            var copy = new Weights();
            foreach (var (name, (shape, data)) in this) copy[name] = (shape, (float[])data.Clone());
            return copy;
        }
        public float[] Get(int layer, string suffix) => this[TensorNames.Layer(layer, suffix)].Data;
        public void Set(int layer, string suffix, float[] data, params long[] shape) => this[TensorNames.Layer(layer, suffix)] = (shape, data);
    }

    /// <summary>What to take out of one block: whole key/value-head groups (with their query heads) and MLP channels.</summary>
    private sealed record Cut(int Layer, int[] KvGroups, int[] Channels);

    // tinylit-8m: 8 blocks of 8 query heads in 4 KV groups of 2 (head size 32), FFN 768, hidden 256.
    private static readonly Cut[] Cuts =
    [
        new(1, [2], []),
        new(3, [], [.. Enumerable.Range(0, 768).Where(c => c % 3 == 1)]),
        new(6, [0, 3], [.. Enumerable.Range(0, 100)]),
    ];

    private static readonly LayerShape[] CutShapes =
    [
        new(8, 4, 768), new(6, 3, 768), new(8, 4, 768), new(8, 4, 512), new(8, 4, 768), new(8, 4, 768), new(4, 2, 668), new(8, 4, 768),
    ];

    /// <summary>The cuts made by slicing (a config with per-block shapes), and the same parts zeroed in the uniform original.</summary>
    private static (ModelConfig Config, Weights Sliced, Weights Zeroed) Apply(LoadedModel source, Cut[] cuts)
    {
        var c = source.Config;
        var original = new Weights(source);
        var sliced = original.Copy();
        var zeroed = original.Copy();
        var shapes = Enumerable.Range(0, c.NumLayers).Select(c.Layer).ToArray();
        int hd = c.HeadDim, d = c.HiddenSize;
        foreach (var cut in cuts)
        {
            int l = cut.Layer, group = shapes[l].Heads / shapes[l].KvHeads;
            var o = zeroed.Get(l, TensorNames.O);
            foreach (int kv in cut.KvGroups)
                for (int r = 0; r < d; r++) o.AsSpan(r * c.QDim + kv * group * hd, group * hd).Clear();
            var down = zeroed.Get(l, TensorNames.Down);
            foreach (int channel in cut.Channels)
                for (int r = 0; r < d; r++) down[r * c.IntermediateSize + channel] = 0;

            var (attention, attentionShape) = StructuredSlicing.RemoveKvGroups(
                new(sliced.Get(l, TensorNames.Q), sliced.Get(l, TensorNames.K), sliced.Get(l, TensorNames.V), sliced.Get(l, TensorNames.O)),
                shapes[l], hd, cut.KvGroups);
            var (mlp, shape) = StructuredSlicing.RemoveChannels(
                new(sliced.Get(l, TensorNames.Gate), sliced.Get(l, TensorNames.Up), sliced.Get(l, TensorNames.Down)), attentionShape, cut.Channels);
            int q = shape.Heads * hd, kvDim = shape.KvHeads * hd, ffn = shape.IntermediateSize;
            sliced.Set(l, TensorNames.Q, attention.Q, q, d);
            sliced.Set(l, TensorNames.K, attention.K, kvDim, d);
            sliced.Set(l, TensorNames.V, attention.V, kvDim, d);
            sliced.Set(l, TensorNames.O, attention.O, d, q);
            sliced.Set(l, TensorNames.Gate, mlp.Gate, ffn, d);
            sliced.Set(l, TensorNames.Up, mlp.Up, ffn, d);
            sliced.Set(l, TensorNames.Down, mlp.Down, d, ffn);
            shapes[l] = shape;
        }
        return (c.WithLayerShapes(shapes), sliced, zeroed);
    }

    /// <summary>Writes <paramref name="weights"/> as a Hugging Face folder with the project's safetensors exporter and loads it back.</summary>
    private static LoadedModel WriteHf(TempDir dir, string name, ModelConfig config, Weights weights)
    {
        using (var raw = SyntheticModel.Write(dir.File(name + ".bin"), config, weights))
            SafetensorsExporter.Export(raw, TensorType.F32, dir.File(name));
        return ModelLoader.Load(dir.File(name));
    }

    private static LoadedModel WriteRaw(TempDir dir, string name, ModelConfig config, Weights weights) =>
        SyntheticModel.Write(dir.File(name + ".bin"), config, weights);

    private static readonly int[] Prompt = [1, 403, 407, 261, 378, 426, 395, 271, 290, 1021, 512, 8, 77, 3090, 260, 11];

    /// <summary>Logits of every position, the prompt run at once (matrix×matrix products).</summary>
    private static float[] PromptLogits(LoadedModel model) => ExportGgufTests.Logits(model, Prompt);

    /// <summary>Logits of every position, one token at a time through the KV cache (matrix×vector products).</summary>
    private static float[] DecodeLogits(LoadedModel model)
    {
        using var transformer = new Transformer(model, threads: 1);
        int vocab = model.Config.VocabSize;
        var cache = transformer.NewCache(Prompt.Length);
        var logits = new float[Prompt.Length * vocab];
        for (int t = 0; t < Prompt.Length; t++) transformer.Forward([Prompt[t]], cache, logits.AsSpan(t * vocab, vocab));
        return logits;
    }

    /// <summary>
    /// Removing terms that are exactly zero changes only the order in which float32 sums run (o_proj and down_proj have
    /// fewer inputs, so the kernels block them differently; the GGUF's permuted Q/K rows reorder q·k): the logits agree
    /// to a few float32 ulps of their scale (measured: at most 3.9e-6 at a largest |logit| of 10.5, 3.6e-7 of it).
    /// The bound, 1e-5 of the largest |logit|, is far below what removing a head that contributes would change (&gt; 1e-2).
    /// </summary>
    private static void AssertSameLogits(float[] expected, float[] actual)
    {
        const double relative = 1e-5;
        Assert.Equal(expected.Length, actual.Length);
        double scale = expected.Max(Math.Abs), worst = 0;
        for (int i = 0; i < expected.Length; i++) worst = Math.Max(worst, Math.Abs(expected[i] - actual[i]));
        Assert.True(worst <= relative * scale, $"max |Δ| = {worst} with logit scale {scale}");
    }

    [Fact]
    public void Removing_kv_groups_and_mlp_channels_equals_zeroing_their_outputs_in_prompt_and_decode()
    {
        using var dir = new TempDir();
        using var source = ModelLoader.Load(SharedData.TinyLit);
        var (config, sliced, zeroed) = Apply(source, Cuts);
        using var pruned = WriteHf(dir, "pruned", config, sliced);
        using var reference = WriteRaw(dir, "zeroed", source.Config, zeroed);

        Assert.Equal(CutShapes, Enumerable.Range(0, pruned.Config.NumLayers).Select(pruned.Config.Layer));
        Assert.Equal(config, pruned.Config);
        Assert.False(pruned.Config.IsUniform);
        Assert.Equal((8, 4, 768), (pruned.Config.NumHeads, pruned.Config.NumKvHeads, pruned.Config.IntermediateSize));
        Assert.Equal(new long[] { 6 * 32, 256 }, pruned.Weights.Get(TensorNames.Layer(1, TensorNames.Q)).Shape);
        Assert.Equal(new long[] { 256, 668 }, pruned.Weights.Get(TensorNames.Layer(6, TensorNames.Down)).Shape);

        var expected = PromptLogits(reference);
        AssertSameLogits(expected, PromptLogits(pruned));
        AssertSameLogits(expected, DecodeLogits(pruned));
        AssertSameLogits(DecodeLogits(reference), DecodeLogits(pruned));

        // The cut removed something: the original's logits are not these.
        var unpruned = PromptLogits(source);
        Assert.True(unpruned.Zip(expected, (a, b) => Math.Abs(a - b)).Max() > 1e-2 * expected.Max(Math.Abs));
    }

    [Fact]
    public void Per_block_model_matches_the_scalar_reference()
    {
        using var dir = new TempDir();
        using var source = ModelLoader.Load(SharedData.TinyLit);
        var (config, sliced, _) = Apply(source, Cuts);
        using var pruned = WriteRaw(dir, "pruned", config, sliced);
        int vocab = config.VocabSize;
        var tokens = Prompt[..10];
        var actual = ExportGgufTests.Logits(pruned, tokens);
        var expected = ReferenceForward.Logits(pruned, tokens);
        double scale = expected.SelectMany(r => r).Max(Math.Abs), worst = 0;
        for (int t = 0; t < tokens.Length; t++)
            for (int i = 0; i < vocab; i++) worst = Math.Max(worst, Math.Abs(actual[t * vocab + i] - expected[t][i]));
        Assert.True(worst < 1e-5 * scale, $"max |Δ| = {worst} with logit scale {scale}");
    }

    [Fact]
    public void Removing_a_whole_block_equals_zeroing_its_outputs()
    {
        using var dir = new TempDir();
        using var source = ModelLoader.Load(SharedData.TinyLit);
        var c = source.Config;
        const int removed = 5;
        var original = new Weights(source);
        var zeroed = original.Copy();
        zeroed.Get(removed, TensorNames.O).AsSpan().Clear(); // the block adds nothing to the residual stream: an identity
        zeroed.Get(removed, TensorNames.Down).AsSpan().Clear();

        var shortened = new Weights();
        string prefix = TensorNames.Layer(removed, "");
        foreach (var (name, tensor) in original)
        {
            if (name.StartsWith(prefix, StringComparison.Ordinal)) continue;
            string renamed = name;
            for (int l = removed + 1; l < c.NumLayers; l++)
                if (name.StartsWith(TensorNames.Layer(l, ""), StringComparison.Ordinal)) renamed = TensorNames.Layer(l - 1, name[TensorNames.Layer(l, "").Length..]);
            shortened[renamed] = tensor;
        }
        var config = c.WithLayerShapes(Enumerable.Range(0, c.NumLayers - 1).Select(c.Layer).ToArray());
        Assert.True(config.IsUniform);
        Assert.Equal(7, config.NumLayers);

        using var pruned = WriteHf(dir, "pruned", config, shortened);
        using var reference = WriteRaw(dir, "zeroed", c, zeroed);
        Assert.Equal(7, pruned.Config.NumLayers);
        // A zeroed block adds exact zeros to the residual stream (x + 0 = x), so here the logits are bit for bit the same.
        Assert.Equal(PromptLogits(reference), PromptLogits(pruned));
        Assert.Equal(DecodeLogits(reference), DecodeLogits(pruned));
    }

    [Fact]
    public void Gguf_export_of_a_per_block_model_writes_deci_arrays_and_reloads_to_the_same_logits()
    {
        using var dir = new TempDir();
        using var source = ModelLoader.Load(SharedData.TinyLit);
        var (config, sliced, _) = Apply(source, Cuts);
        using var pruned = WriteHf(dir, "pruned", config, sliced);
        string path = dir.File("pruned.gguf");
        GgufExporter.Export(pruned, TensorType.F32, path);

        using (var gguf = GgufFile.Open(path))
        {
            var meta = gguf.Metadata;
            Assert.Equal("deci", meta.GetString("general.architecture"));
            foreach (var (key, expected) in new (string, int[])[]
            {
                ("deci.attention.head_count", [8, 6, 8, 8, 8, 8, 4, 8]),
                ("deci.attention.head_count_kv", [4, 3, 4, 4, 4, 4, 2, 4]),
                ("deci.feed_forward_length", [768, 768, 768, 512, 768, 768, 668, 768]),
            })
            {
                var value = meta.Get(key);
                Assert.True(value.IsArray, key);
                Assert.Equal(GgufValueType.Int32, value.ElementType);
                Assert.Equal(expected, meta.GetInt32Array(key));
            }
            Assert.Equal(32u, meta.GetUInt32("deci.attention.key_length"));
            Assert.Equal(32u, meta.GetUInt32("deci.attention.value_length"));
            Assert.Equal(8u, meta.GetUInt32("deci.block_count"));
            Assert.False(meta.Contains("llama.attention.head_count"));
        }

        using var exported = ModelLoader.Load(path);
        Assert.Equal(config with { RopeStyle = RopeStyle.Interleaved }, exported.Config);
        AssertSameLogits(PromptLogits(pruned), PromptLogits(exported));
        AssertSameLogits(PromptLogits(pruned), DecodeLogits(exported));
    }

    [Fact]
    public void Statistics_count_each_block_by_its_own_widths()
    {
        using var dir = new TempDir();
        using var source = ModelLoader.Load(SharedData.TinyLit);
        var (config, sliced, _) = Apply(source, Cuts);
        using var pruned = WriteHf(dir, "pruned", config, sliced);
        var stats = ModelStatistics.Of(pruned);

        Assert.Equal(pruned.Weights.All.Sum(t => t.ElementCount), stats.Parameters);
        long d = 256, q = CutShapes.Sum(s => s.Heads * 32L), kv = CutShapes.Sum(s => s.KvHeads * 32L), ffn = CutShapes.Sum(s => (long)s.IntermediateSize);
        Assert.Equal(q * d, stats.Groups.Single(g => g.Name == "attention.q").Parameters);
        Assert.Equal(kv * d, stats.Groups.Single(g => g.Name == "attention.k").Parameters);
        Assert.Equal(ffn * d, stats.Groups.Single(g => g.Name == "mlp.down").Parameters);
        long matmul = d * (2 * q + 2 * kv + 3 * ffn) + 4096 * d;
        Assert.Equal(matmul, stats.MatmulParameters);
        Assert.Equal(2.0 * matmul + 4.0 * 512 * q, stats.FlopsPerToken(512));
        Assert.True(stats.Parameters < ModelStatistics.Of(source).Parameters);
    }
}
