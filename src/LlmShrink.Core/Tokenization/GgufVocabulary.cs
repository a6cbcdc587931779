namespace LlmShrink.Tokenization;

/// <summary>
/// The tokenizer a GGUF file embeds (<c>tokenizer.ggml.*</c> keys): <see cref="Model"/> is "llama" (SentencePiece,
/// with scores) or "gpt2" (byte-level BPE, with merges).
/// </summary>
public sealed record GgufVocabulary(
    string Model,
    string[] Tokens,
    float[]? Scores,
    int[]? TokenTypes,
    string[]? Merges,
    int BosId,
    int EosId,
    int? UnknownId,
    bool AddBos,
    bool AddSpacePrefix,
    string? Pre);
