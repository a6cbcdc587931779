using Xunit;
using LlmShrink.Formats;
using LlmShrink.Model;

namespace LlmShrink.Tests;

public class ForwardTests
{
    private static readonly int[] Prompt = [3, 17, 0, 66, 42, 5, 5, 29, 11, 60, 1];

    public static TheoryData<string> Variants => new()
    {
        "llama-gqa", "tied", "qwen2-bias", "qwen3-qknorm", "interleaved", "llama3-scaling", "rope-factors", "mistral-window", "f16", "bf16", "head-dim-64", "head-dim-80-window",
    };

    private static LoadedModel Variant(TempDir dir, string name)
    {
        var c = SyntheticModel.Config();
        string path = dir.File(name + ".bin");
        return name switch
        {
            "llama-gqa" => SyntheticModel.Build(path, c),
            "tied" => SyntheticModel.Build(path, c with { TiedEmbeddings = true }),
            "qwen2-bias" => SyntheticModel.Build(path, c with { Architecture = "qwen2", AttentionBias = true, TiedEmbeddings = true }),
            "qwen3-qknorm" => SyntheticModel.Build(path, c with { Architecture = "qwen3", QkNorm = true, RmsNormEps = 1e-6f }),
            "interleaved" => SyntheticModel.Build(path, c with { RopeStyle = RopeStyle.Interleaved }),
            "llama3-scaling" => SyntheticModel.Build(path, c with { RopeTheta = 500000f, RopeScaling = new Llama3RopeScaling(8, 1, 8, 256) }),
            "rope-factors" => SyntheticModel.Build(path, c with { RopeStyle = RopeStyle.Interleaved }, ropeFactors: true),
            "mistral-window" => SyntheticModel.Build(path, c with { Architecture = "mistral", SlidingWindow = 4 }),
            "f16" => SyntheticModel.Build(path, c, type: TensorType.F16),
            "bf16" => SyntheticModel.Build(path, c with { AttentionBias = true }, type: TensorType.BF16),
            // Head sizes of whole 512-bit vectors take the written-out attention loops (64: whole 64-float quarters; 80: one left-over vector).
            "head-dim-64" => SyntheticModel.Build(path, c with { NumHeads = 4, NumKvHeads = 2, HeadDim = 64 }),
            "head-dim-80-window" => SyntheticModel.Build(path, c with { Architecture = "mistral", NumHeads = 3, NumKvHeads = 1, HeadDim = 80, SlidingWindow = 6 }),
            _ => throw new ArgumentException(name),
        };
    }

    private static float[] AllLogits(Transformer t, int[] tokens)
    {
        var logits = new float[tokens.Length * t.Config.VocabSize];
        t.Forward(tokens, t.NewCache(32), logits);
        return logits;
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void Logits_match_scalar_reference(string variant)
    {
        using var dir = new TempDir();
        using var model = Variant(dir, variant);
        using var transformer = new Transformer(model);
        var actual = AllLogits(transformer, Prompt);
        var expected = ReferenceForward.Logits(model, Prompt);
        double scale = expected.SelectMany(r => r).Max(Math.Abs);
        Assert.True(scale > 1, $"logits too small to be a meaningful check: {scale}");
        double worst = 0;
        for (int t = 0; t < Prompt.Length; t++)
            for (int i = 0; i < model.Config.VocabSize; i++)
                worst = Math.Max(worst, Math.Abs(actual[t * model.Config.VocabSize + i] - expected[t][i]));
        Assert.True(worst < 1e-5 * scale, $"max |Δ| = {worst} with logit scale {scale}");
    }

    [Theory]
    [InlineData("llama-gqa")]
    [InlineData("qwen3-qknorm")]
    [InlineData("mistral-window")]
    [InlineData("head-dim-64")]
    [InlineData("head-dim-80-window")]
    public void Batched_prompt_equals_token_by_token_decode(string variant)
    {
        using var dir = new TempDir();
        using var model = Variant(dir, variant);
        using var transformer = new Transformer(model);
        int vocab = model.Config.VocabSize;
        var batched = AllLogits(transformer, Prompt);

        var cache = transformer.NewCache(Prompt.Length);
        var step = new float[vocab];
        for (int t = 0; t < Prompt.Length; t++)
        {
            transformer.Forward(Prompt.AsSpan(t, 1), cache, step);
            Assert.Equal(t + 1, cache.Length);
            for (int i = 0; i < vocab; i++) Assert.True(Math.Abs(step[i] - batched[t * vocab + i]) < 1e-5, $"token {t} logit {i}: {step[i]} vs {batched[t * vocab + i]}");
        }

        // A prompt split into two chunks over the same cache also agrees.
        cache.Clear();
        transformer.Forward(Prompt.AsSpan(0, 5), cache, new float[vocab]);
        var rest = new float[(Prompt.Length - 5) * vocab];
        transformer.Forward(Prompt.AsSpan(5), cache, rest);
        for (int i = 0; i < rest.Length; i++) Assert.True(Math.Abs(rest[i] - batched[5 * vocab + i]) < 1e-5);
    }

    [Fact]
    public void Last_only_logits_are_the_last_row_of_all_logits()
    {
        using var dir = new TempDir();
        using var model = Variant(dir, "llama-gqa");
        using var transformer = new Transformer(model);
        int vocab = model.Config.VocabSize;
        var all = AllLogits(transformer, Prompt);
        var last = new float[vocab];
        transformer.Forward(Prompt, transformer.NewCache(Prompt.Length), last);
        Assert.Equal(all.AsSpan((Prompt.Length - 1) * vocab).ToArray(), last);
    }

    [Fact]
    public void Forward_allocates_nothing_once_buffers_have_grown()
    {
        using var dir = new TempDir();
        using var model = Variant(dir, "bf16");
        using var transformer = new Transformer(model);
        int vocab = model.Config.VocabSize;
        var cache = transformer.NewCache(2 * Prompt.Length + 1);
        var all = new float[Prompt.Length * vocab];
        var last = new float[vocab];
        transformer.Forward(Prompt, cache, all); // first use: scratch buffers and cache storage
        transformer.Forward(Prompt.AsSpan(0, 1), cache, last);
        long before = GC.GetAllocatedBytesForCurrentThread();
        transformer.Forward(Prompt.AsSpan(1, 1), cache, last);
        transformer.Forward(Prompt.AsSpan(0, Prompt.Length - 2), cache, all.AsSpan(0, (Prompt.Length - 2) * vocab));
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Fact]
    public void Single_thread_equals_all_threads()
    {
        using var dir = new TempDir();
        using var model = Variant(dir, "qwen2-bias");
        using var one = new Transformer(model, threads: 1);
        using var all = new Transformer(model);
        Assert.Equal(AllLogits(one, Prompt), AllLogits(all, Prompt));
    }

    private sealed class Recorder : IBlockObserver
    {
        public readonly List<(int Layer, float[] Hidden, int Tokens)> Inputs = [], Outputs = [];
        public void BlockInput(int layer, ReadOnlySpan<float> hidden, int tokens) => Inputs.Add((layer, hidden.ToArray(), tokens));
        public void BlockOutput(int layer, ReadOnlySpan<float> hidden, int tokens) => Outputs.Add((layer, hidden.ToArray(), tokens));
    }

    [Fact]
    public void Observer_sees_every_block_and_outputs_chain_into_inputs()
    {
        using var dir = new TempDir();
        using var model = Variant(dir, "llama-gqa");
        using var transformer = new Transformer(model);
        var recorder = new Recorder();
        transformer.Observer = recorder;
        AllLogits(transformer, Prompt);
        var c = model.Config;
        Assert.Equal(Enumerable.Range(0, c.NumLayers), recorder.Inputs.Select(e => e.Layer));
        Assert.Equal(Enumerable.Range(0, c.NumLayers), recorder.Outputs.Select(e => e.Layer));
        Assert.All(recorder.Inputs.Concat(recorder.Outputs), e => Assert.Equal((Prompt.Length, Prompt.Length * c.HiddenSize), (e.Tokens, e.Hidden.Length)));
        for (int l = 0; l + 1 < c.NumLayers; l++) Assert.Equal(recorder.Outputs[l].Hidden, recorder.Inputs[l + 1].Hidden);
        Assert.NotEqual(recorder.Inputs[0].Hidden, recorder.Outputs[0].Hidden);
        // Layer 0 sees the embedding rows.
        var embedding = model.Weights.Get(TensorNames.Embedding).ToFloatArray();
        Assert.Equal(embedding.AsSpan(Prompt[1] * c.HiddenSize, c.HiddenSize).ToArray(), recorder.Inputs[0].Hidden.AsSpan(c.HiddenSize, c.HiddenSize).ToArray());
    }

    [Fact]
    public void Block_by_block_forward_reproduces_the_full_forward_pass()
    {
        using var dir = new TempDir();
        using var model = Variant(dir, "qwen3-qknorm");
        using var transformer = new Transformer(model);
        var recorder = new Recorder();
        transformer.Observer = recorder;
        AllLogits(transformer, Prompt);
        transformer.Observer = null;

        var c = model.Config;
        var hidden = new float[Prompt.Length * c.HiddenSize];
        transformer.Embed(Prompt, hidden);
        var cache = transformer.NewCache(Prompt.Length);
        for (int l = 0; l < c.NumLayers; l++)
        {
            Assert.Equal(recorder.Inputs[l].Hidden, hidden);
            cache.Clear();
            transformer.ForwardBlock(l, hidden, Prompt.Length, cache);
            Assert.Equal(recorder.Outputs[l].Hidden, hidden);
        }
    }

    [Fact]
    public void Cache_holds_only_the_layers_that_have_run()
    {
        using var dir = new TempDir();
        using var model = Variant(dir, "qwen3-qknorm");
        using var transformer = new Transformer(model);
        var c = model.Config;
        long layerBytes = 2L * Prompt.Length * c.KvDim * sizeof(float);
        var hidden = new float[Prompt.Length * c.HiddenSize];
        transformer.Embed(Prompt, hidden);
        var blockCache = transformer.NewCache(Prompt.Length);
        Assert.Equal(0, blockCache.AllocatedBytes);
        transformer.ForwardBlock(1, hidden, Prompt.Length, blockCache);
        Assert.Equal(layerBytes, blockCache.AllocatedBytes);

        var fullCache = transformer.NewCache(Prompt.Length);
        transformer.Forward(Prompt, fullCache, new float[c.VocabSize]);
        Assert.Equal(c.NumLayers * layerBytes, fullCache.AllocatedBytes);
    }

    /// <summary>
    /// llama.cpp's converter reorders each head's Q/K rows so that Hugging Face pairs (i, i + d/2) become adjacent
    /// (2i, 2i + 1); an Interleaved model with permuted rows must compute exactly what the RotateHalf model computes.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void RotateHalf_model_equals_interleaved_model_with_permuted_qk_rows(bool qwenStyle)
    {
        using var dir = new TempDir();
        var c = SyntheticModel.Config() with { RopeStyle = RopeStyle.RotateHalf, AttentionBias = qwenStyle };
        var weights = SyntheticModel.RandomWeights(c, seed: 7);
        using var hf = SyntheticModel.Write(dir.File("hf.bin"), c, weights);

        var permuted = new Dictionary<string, (long[] Shape, float[] Data)>(weights);
        for (int l = 0; l < c.NumLayers; l++)
        {
            foreach (var (name, heads) in new[] { (TensorNames.Q, c.NumHeads), (TensorNames.K, c.NumKvHeads), (TensorNames.QBias, c.NumHeads), (TensorNames.KBias, c.NumKvHeads) })
            {
                string full = TensorNames.Layer(l, name);
                if (!weights.TryGetValue(full, out var t)) continue;
                permuted[full] = (t.Shape, PermuteRows(t.Data, heads, c.HeadDim, t.Data.Length / (heads * c.HeadDim)));
            }
        }
        using var gguf = SyntheticModel.Write(dir.File("gguf.bin"), c with { RopeStyle = RopeStyle.Interleaved }, permuted);

        using var a = new Transformer(hf);
        using var b = new Transformer(gguf);
        var la = AllLogits(a, Prompt);
        var lb = AllLogits(b, Prompt);
        for (int i = 0; i < la.Length; i++) Assert.True(Math.Abs(la[i] - lb[i]) < 1e-5, $"logit {i}: {la[i]} vs {lb[i]}");
    }

    /// <summary>Within each head, HF row h·d/2 + i moves to 2i + h (h ∈ {0, 1}).</summary>
    private static float[] PermuteRows(float[] data, int heads, int headDim, int columns)
    {
        var result = new float[data.Length];
        for (int head = 0; head < heads; head++)
            for (int half = 0; half < 2; half++)
                for (int i = 0; i < headDim / 2; i++)
                {
                    int from = head * headDim + half * headDim / 2 + i, to = head * headDim + 2 * i + half;
                    Array.Copy(data, from * columns, result, to * columns, columns);
                }
        return result;
    }

    [Fact]
    public void Rejects_overfull_cache_bad_tokens_and_bad_logit_buffers()
    {
        using var dir = new TempDir();
        using var model = Variant(dir, "llama-gqa");
        using var transformer = new Transformer(model);
        int vocab = model.Config.VocabSize;
        Assert.Throws<ArgumentException>(() => transformer.Forward([1, 2, 3], transformer.NewCache(2), new float[vocab]));
        Assert.Throws<ArgumentOutOfRangeException>(() => transformer.Forward([vocab], transformer.NewCache(2), new float[vocab]));
        Assert.Throws<ArgumentException>(() => transformer.Forward([1, 2], transformer.NewCache(2), new float[vocab + 1]));
    }

    [Fact]
    public void Wrong_weight_shape_is_a_user_error_naming_the_tensor()
    {
        using var dir = new TempDir();
        var c = SyntheticModel.Config();
        var weights = SyntheticModel.RandomWeights(c, seed: 3);
        string name = TensorNames.Layer(1, TensorNames.K);
        weights[name] = ([c.KvDim + 1, c.HiddenSize], new float[(c.KvDim + 1) * c.HiddenSize]);
        using var model = SyntheticModel.Write(dir.File("bad.bin"), c, weights);
        var error = Assert.Throws<ShrinkException>(() => new Transformer(model));
        Assert.Contains(name, error.Message);
    }
}
