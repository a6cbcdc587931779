namespace LlmShrink.Model;

/// <summary>
/// The widths of one decoder block: query heads, key/value heads and the FFN's intermediate size (the head size is
/// the model's). Structured pruning — whole GQA groups, FFN channels — leaves them different from block to block.
/// </summary>
public readonly record struct LayerShape(int Heads, int KvHeads, int IntermediateSize);
