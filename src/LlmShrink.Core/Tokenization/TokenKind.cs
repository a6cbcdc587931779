namespace LlmShrink.Tokenization;

/// <summary>
/// What a vocabulary entry is. The numbers are SentencePiece's <c>ModelProto.SentencePiece.Type</c>, which GGUF's
/// <c>tokenizer.ggml.token_type</c> reuses unchanged.
/// </summary>
public enum TokenKind
{
    Normal = 1,
    /// <summary>The unknown token (&lt;unk&gt;).</summary>
    Unknown = 2,
    /// <summary>BOS, EOS, chat markers: never produced from text, omitted when decoding.</summary>
    Control = 3,
    /// <summary>Always matched as a whole in the text, decoded as its own text.</summary>
    UserDefined = 4,
    Unused = 5,
    /// <summary>A raw byte &lt;0xXX&gt;, the fallback for characters the vocabulary lacks.</summary>
    Byte = 6,
}
