namespace LlmShrink.Model;

/// <summary>
/// Sees each transformer block's input and output hidden states during a forward pass
/// (row-major [tokens, hiddenSize]). Calibration for compression methods is built on this.
/// </summary>
public interface IBlockObserver
{
    void BlockInput(int layer, ReadOnlySpan<float> hidden, int tokens);
    void BlockOutput(int layer, ReadOnlySpan<float> hidden, int tokens);
}
