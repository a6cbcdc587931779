namespace LlmShrink.Tokenization;

/// <summary>Builds the right <see cref="ITextTokenizer"/> for a model's tokenizer files.</summary>
public static class TokenizerFactory
{
    /// <summary>Tokenizer of a Hugging Face folder (tokenizer.json preferred, else tokenizer.model), or null if it has none.</summary>
    public static ITextTokenizer? FromFolder(string folder) => null;

    public static ITextTokenizer FromGguf(GgufVocabulary vocabulary, string sourcePath) => throw new NotImplementedException();

    /// <summary>llama2.c's tokenizer.bin (max token length, then per token: score, length, bytes).</summary>
    public static ITextTokenizer FromLlama2cFile(string path, int vocabSize) => throw new NotImplementedException();
}
