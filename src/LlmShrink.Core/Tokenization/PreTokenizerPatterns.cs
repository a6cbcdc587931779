using System.Text.RegularExpressions;

namespace LlmShrink.Tokenization;

/// <summary>
/// The regular expressions that cut text into words before byte-level BPE merges (merges never cross a word). Each
/// match is a word and so is any text between matches (Hugging Face's "Isolated" split behaviour).
/// </summary>
public static class PreTokenizerPatterns
{
    private const RegexOptions Options = RegexOptions.CultureInvariant | RegexOptions.Compiled;

    /// <summary>GPT-2: English contractions, letters / digits / other runs with one optional leading space, whitespace.</summary>
    public static readonly Regex Gpt2 = new(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+", Options);

    /// <summary>Llama 3 ("llama-bpe"): case-insensitive contractions, a letter run may take one leading non-letter, digits in groups of up to 3, newlines kept apart.</summary>
    public static readonly Regex Llama3 = new(@"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+", Options);

    /// <summary>Qwen2: as Llama 3 but every digit is its own word.</summary>
    public static readonly Regex Qwen2 = new(@"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+", Options);

    /// <summary>The pattern for GGUF's <c>tokenizer.ggml.pre</c> (llama.cpp's names); anything else gets GPT-2's.</summary>
    public static Regex[] ForGgufPre(string? pre) => pre switch
    {
        "llama-bpe" or "llama3" => [Llama3],
        "qwen2" => [Qwen2],
        _ => [Gpt2],
    };

    /// <summary>Cuts <paramref name="text"/> by each pattern in turn: the words of one pattern are cut again by the next.</summary>
    public static List<string> Split(string text, IReadOnlyList<Regex> patterns)
    {
        var words = new List<string> { text };
        foreach (var pattern in patterns)
        {
            var next = new List<string>();
            foreach (string word in words)
            {
                int end = 0;
                foreach (Match m in pattern.Matches(word))
                {
                    if (m.Length == 0) continue;
                    if (m.Index > end) next.Add(word[end..m.Index]);
                    next.Add(m.Value);
                    end = m.Index + m.Length;
                }
                if (end < word.Length) next.Add(word[end..]);
            }
            words = next;
        }
        return words;
    }
}
