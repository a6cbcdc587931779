using LlmShrink.Model;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>
/// A GPTQ-compressed tinylit-8m decoded one token at a time (int8 activations) against its prompt path (float); and
/// the packed layers' hot paths allocating nothing once their scratch has grown.
/// </summary>
[Collection(CompressedTinyLit.Collection)]
public class GptqDecodeTests
{
    [Fact]
    public void Token_by_token_decode_agrees_with_the_prompt_path()
    {
        using var model = ModelLoader.Load(CompressedTinyLit.Gptq(CompressedTinyLit.ActOrderG128));
        var tokens = CompressedTinyLit.EvalTokens(model, 48);
        using var transformer = new Transformer(model, threads: 1);
        int vocab = model.Config.VocabSize;
        var prompt = new float[tokens.Length * vocab];
        transformer.Forward(tokens, transformer.NewCache(tokens.Length), prompt);

        var cache = transformer.NewCache(tokens.Length);
        var step = new float[vocab];
        double worst = 0, scale = 0;
        int agree = 0;
        for (int t = 0; t < tokens.Length; t++)
        {
            transformer.Forward(tokens.AsSpan(t, 1), cache, step);
            var row = prompt.AsSpan(t * vocab, vocab);
            for (int i = 0; i < vocab; i++)
            {
                worst = Math.Max(worst, Math.Abs(step[i] - row[i]));
                scale = Math.Max(scale, Math.Abs(row[i]));
            }
            if (System.Numerics.Tensors.TensorPrimitives.IndexOfMax(step) == System.Numerics.Tensors.TensorPrimitives.IndexOfMax(row)) agree++;
        }
        // Decode rounds every activation entering a 4-bit layer to int8 (a relative error of ~0.4 % per layer output,
        // GptqInt8GemvTests), where the prompt path multiplies in float (which alone would agree to ~1e-5): measured
        // max |Δ| is 0.55 % of the logit scale with every greedy choice the same; 2 % leaves room for other machines.
        Assert.True(worst < 0.02 * scale, $"max |Δ| = {worst} with logit scale {scale}");
        Assert.True(agree >= tokens.Length - 2, $"top-1 agrees on {agree} of {tokens.Length} tokens");
    }

    [Fact]
    public void W8A8_weights_are_read_in_place_from_the_checkpoint()
    {
        using var model = ModelLoader.Load(CompressedTinyLit.Folder("smoothquant", "alpha: 0.5"));
        var c = model.Config;
        string module = "model.layers.0.mlp.down_proj";
        long before = GC.GetAllocatedBytesForCurrentThread();
        var layer = LinearLoader.Load(model.Weights, module, c.HiddenSize, c.IntermediateSize, bias: null);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.IsType<W8A8Linear>(layer);
        // The int8 matrix is intermediate × hidden bytes; only its per-channel scales (4 bytes per output) are copied.
        Assert.True(allocated < (long)c.HiddenSize * c.IntermediateSize / 8, $"loading allocated {allocated} bytes");
    }

    public static TheoryData<string> PackedFolders => new() { "gptq-act-order", "smoothquant-w8a8" };

    [Theory]
    [MemberData(nameof(PackedFolders))]
    public void Packed_forward_allocates_nothing_once_buffers_have_grown(string folder)
    {
        using var model = ModelLoader.Load(folder == "gptq-act-order" ? CompressedTinyLit.Gptq(CompressedTinyLit.ActOrderG128)
            : CompressedTinyLit.Folder("smoothquant", "alpha: 0.5"));
        var tokens = CompressedTinyLit.EvalTokens(model, 24);
        // One thread, so that all work (and any allocation) happens on the thread that counts its bytes.
        using var transformer = new Transformer(model, threads: 1);
        int vocab = model.Config.VocabSize;
        var cache = transformer.NewCache(2 * tokens.Length);
        var all = new float[tokens.Length * vocab];
        var last = new float[vocab];
        transformer.Forward(tokens, cache, all); // first use: scratch buffers, cache storage, per-thread kernel scratch
        transformer.Forward(tokens.AsSpan(0, 1), cache, last);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int t = 1; t < 8; t++) transformer.Forward(tokens.AsSpan(t, 1), cache, last);
        transformer.Forward(tokens.AsSpan(0, tokens.Length - 8), cache, all.AsSpan(0, (tokens.Length - 8) * vocab));
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }
}
