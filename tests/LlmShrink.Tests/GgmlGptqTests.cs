using LlmShrink.Compression.Quantization;
using LlmShrink.Formats;
using LlmShrink.LinearAlgebra;
using Xunit;
using Xunit.Abstractions;

namespace LlmShrink.Tests;

/// <summary><see cref="GgmlGptq"/> on seeded matrices: its blocks are llama.cpp blocks holding exactly GPTQ's values, at a lower output error than the block encoder alone.</summary>
public class GgmlGptqTests(ITestOutputHelper output)
{
    const int Rows = 64, Columns = 512, Tokens = 1024;
    static readonly float[] W = QuantizationTestData.Weights(Rows, Columns, seed: 21);
    static readonly float[] X = QuantizationTestData.Activations(Tokens, Columns, seed: 22);
    static readonly double[] H = Hessian();
    /// <summary>Per column mean x², the importance the block encoder weighs (the diagonal of H/2).</summary>
    static readonly float[] Importance = Enumerable.Range(0, Columns).Select(c => (float)(H[c * Columns + c] / 2)).ToArray();

    static double[] Hessian()
    {
        var acc = new HessianAccumulator(Columns);
        acc.Add(X, Tokens);
        return acc.ToHessian();
    }

    public static TheoryData<TensorType> Types => new(Enum.GetValues<TensorType>().Where(GgmlBlockLevels.Supports));

    static float[] Decode(TensorType type, byte[] blocks)
    {
        int rowBytes = (int)TensorTypes.ByteCount(type, Columns);
        var decoded = new float[Rows * Columns];
        for (int r = 0; r < Rows; r++) GgmlBlocks.Dequantize(type, blocks.AsSpan(r * rowBytes, rowBytes), decoded.AsSpan(r * Columns, Columns));
        return decoded;
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void Blocks_decode_bit_for_bit_to_the_values_gptq_used(TensorType type)
    {
        var result = GgmlGptq.QuantizeConsumingHessian(W, Rows, Columns, (double[])H.Clone(), type, Importance);
        Assert.Equal(Rows * TensorTypes.ByteCount(type, Columns), result.Blocks.Length);
        var decoded = Decode(type, result.Blocks);
        for (int i = 0; i < decoded.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(decoded[i]) == BitConverter.SingleToInt32Bits(result.Weights[i]),
                $"{type} weight {i}: block decodes to {decoded[i]:R}, GPTQ used {result.Weights[i]:R}");
        // Every stored level lies in its sub-block's range.
        int blockElements = TensorTypes.BlockElements(type), blockBytes = TensorTypes.BlockBytes(type), sub = GgmlBlockLevels.SubBlockElements(type);
        for (int b = 0; b < result.Blocks.Length / blockBytes; b++)
        {
            var block = result.Blocks.AsSpan(b * blockBytes, blockBytes);
            for (int e = 0; e < blockElements; e++) Assert.InRange(GgmlBlockLevels.Level(type, block, e), 0, GgmlBlockLevels.Grid(type, block, e / sub).MaxLevel);
        }
    }

    /// <summary>
    /// On correlated inputs GPTQ's error feedback lowers ‖WX − ŴX‖² below the importance-weighted block encoder's (the
    /// <c>ggml</c> method's nearest rounding, llama-quantize with an imatrix), for every type, at the same bytes.
    /// </summary>
    [Theory]
    [MemberData(nameof(Types))]
    public void Output_error_is_below_the_importance_weighted_encoders(TensorType type)
    {
        int rowBytes = (int)TensorTypes.ByteCount(type, Columns);
        var nearest = new byte[Rows * rowBytes];
        for (int r = 0; r < Rows; r++) GgmlQuantizers.Quantize(type, W.AsSpan(r * Columns, Columns), nearest.AsSpan(r * rowBytes, rowBytes), Importance);
        double nearestError = QuantizationTestData.OutputError(X, Tokens, W, Decode(type, nearest), Rows, Columns);
        var gptq = GgmlGptq.QuantizeConsumingHessian(W, Rows, Columns, (double[])H.Clone(), type, Importance);
        double gptqError = QuantizationTestData.OutputError(X, Tokens, W, gptq.Weights, Rows, Columns);
        output.WriteLine($"{type}: ‖WX − ŴX‖² nearest {nearestError:E3}, GPTQ {gptqError:E3} ({gptqError / nearestError:F3}×)");
        Assert.True(gptqError < nearestError, $"{type}: GPTQ {gptqError:E3} vs nearest {nearestError:E3}");
    }
}
