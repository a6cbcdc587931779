namespace LlmShrink.Tokenization;

/// <summary>Text ↔ token ids for one model, whatever the vocabulary's origin.</summary>
public interface ITextTokenizer
{
    int VocabSize { get; }
    int BosId { get; }
    int EosId { get; }
    /// <summary>Whether the model expects BOS in front of a prompt (tokenizer_config add_bos_token / GGUF add_bos_token).</summary>
    bool AddBos { get; }

    /// <summary>Token ids of <paramref name="text"/>, with BOS first when <paramref name="addBos"/>.</summary>
    int[] Encode(string text, bool addBos);

    /// <summary>
    /// Token ids of <paramref name="text"/> where it continues a longer text: the text is cut at a single space between
    /// a non-space character and a letter or digit, and <paramref name="text"/> starts with that space. Then
    /// Encode(earlier) followed by EncodeContinuation(text) equals Encode(earlier + text), so a long file can be
    /// tokenized piece by piece (<see cref="StreamingEncoder"/>).
    /// </summary>
    int[] EncodeContinuation(string text);

    /// <summary>Text of a token sequence (special tokens such as BOS/EOS omitted).</summary>
    string Decode(ReadOnlySpan<int> ids);
}
