using LlmShrink.Compression;
using LlmShrink.Compression.Recipes;
using LlmShrink.Evaluation;
using LlmShrink.Export;
using LlmShrink.Model;
using Xunit;

namespace LlmShrink.Tests;

public class AwqMethodTests
{
    [Fact]
    public void TinyLitAwqBeatsRtnWithTheSameSchemeAndReloadsIdentically()
    {
        using var dir = new TempDir();
        using var awq = TinyLitCompression.Run(Recipe.Load("w4g128-awq"), dir.File("awq"));
        using var rtn = TinyLitCompression.Run(Recipe.Parse("""
            modifiers:
              - method: rtn
                bits: 4
                group_size: 128
                symmetric: false
            """, "w4g128-rtn-asym", "test"), output: null);

        Assert.All(awq.Result.Layers, l => Assert.Equal("4-bit asym g128", l.Scheme));
        double awqPerplexity = TinyLitCompression.Perplexity(awq.Transformer);
        double rtnPerplexity = TinyLitCompression.Perplexity(rtn.Transformer);
        Assert.True(awqPerplexity < rtnPerplexity, $"AWQ {awqPerplexity} vs RTN {rtnPerplexity}");
        TinyLitCompression.AssertReloadsIdentically(awq.Transformer, dir.File("awq"));
    }
}

/// <summary>tinylit-8m compressed in memory by the sequential pipeline (and optionally written), then evaluated.</summary>
internal sealed class TinyLitCompression : IDisposable
{
    /// <summary>Calibration kept small so each test stays fast; the CLI default is 128 × 256.</summary>
    public const int Samples = 8, SequenceLength = 128;
    /// <summary>Perplexity over the first chunks of tinylit_eval.txt, llama.cpp protocol.</summary>
    public const int Context = 256, Chunks = 20;

    private static readonly Lazy<(int[] Tokens, int Bos)> EvalTokens = new(() =>
    {
        using var model = ModelLoader.Load(SharedData.TinyLit);
        var tokenizer = model.RequireTokenizer();
        // The chunks needed come from the start of the file; ~8 characters per token leaves a wide margin.
        string text = File.ReadAllText(SharedData.Corpus("tinylit_eval.txt"));
        return (tokenizer.Encode(text[..Math.Min(text.Length, Context * Chunks * 8)], tokenizer.AddBos), tokenizer.BosId);
    });

    public static readonly Lazy<double> FloatPerplexity = new(() =>
    {
        using var model = ModelLoader.Load(SharedData.TinyLit);
        using var transformer = new Transformer(model);
        return Perplexity(transformer);
    });

    public LoadedModel Model { get; }
    public Transformer Transformer { get; }
    public PipelineResult Result { get; }

    private TinyLitCompression(LoadedModel model, Transformer transformer, PipelineResult result)
    {
        Model = model;
        Transformer = transformer;
        Result = result;
    }

    public static TinyLitCompression Run(Recipe recipe, string? output)
    {
        var model = ModelLoader.Load(SharedData.TinyLit);
        var transformer = new Transformer(model);
        var calibration = CalibrationSet.FromFile(SharedData.Corpus("tinylit_calib.txt"), model.RequireTokenizer(), Samples, SequenceLength, seed: 0);
        using var writer = output is null ? null : new CompressedCheckpointWriter(model, output);
        var result = new SequentialPipeline(model, transformer, recipe).Run(calibration, writer);
        writer?.Finish(recipe.Text, "test");
        return new TinyLitCompression(model, transformer, result);
    }

    public static double Perplexity(Transformer transformer)
    {
        var (tokens, bos) = EvalTokens.Value;
        var result = LlmShrink.Evaluation.Perplexity.Evaluate(tokens, Context, PerplexityProtocol.LlamaCpp, bos,
            new TransformerLogitModel(transformer, Context), maxWindows: Chunks);
        Assert.Equal(Chunks, result.Windows);
        return result.Perplexity;
    }

    /// <summary>The written folder runs the very same function as the in-memory compressed transformer.</summary>
    public static void AssertReloadsIdentically(Transformer compressed, string folder)
    {
        using var model = ModelLoader.Load(folder);
        using var reloaded = new Transformer(model);
        var tokens = EvalTokens.Value.Tokens.AsSpan(0, 48);
        int vocab = compressed.Config.VocabSize;
        var expected = new float[tokens.Length * vocab];
        var actual = new float[tokens.Length * vocab];
        compressed.Forward(tokens, compressed.NewCache(tokens.Length), expected);
        reloaded.Forward(tokens, reloaded.NewCache(tokens.Length), actual);
        Assert.Equal(expected, actual);
    }

    public void Dispose()
    {
        Transformer.Dispose();
        Model.Dispose();
    }
}
