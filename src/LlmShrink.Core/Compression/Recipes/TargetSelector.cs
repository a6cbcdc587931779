using System.Text.RegularExpressions;
using LlmShrink.Model;

namespace LlmShrink.Compression.Recipes;

/// <summary>
/// Which linear layers a modifier applies to, in llm-compressor's spirit: each target or ignore entry is "Linear"
/// (every block linear), a module name such as "q_proj" or "lm_head", or "re:REGEX" matched against the full module
/// path (e.g. "model.layers.3.mlp.down_proj", "lm_head"). Ignore wins over targets. "Linear" never covers lm_head (as
/// llm-compressor recipes ignore it by default): the output projection is compressed only when named or matched by a
/// regex. Token embeddings cannot be targeted: no GPTQ/W8A8 checkpoint layout holds a quantized embedding, and the GGUF
/// export quantizes them (<c>--type</c>).
/// </summary>
public sealed class TargetSelector
{
    private readonly IReadOnlyList<string> _targets, _ignore;

    public TargetSelector(IReadOnlyList<string> targets, IReadOnlyList<string> ignore, string source)
    {
        foreach (var pattern in targets.Concat(ignore))
        {
            if (pattern.StartsWith("re:", StringComparison.Ordinal))
            {
                try { _ = new Regex(pattern[3..]); }
                catch (ArgumentException e) { throw ShrinkException.InFile(source, $"invalid target regex '{pattern}': {e.Message}"); }
            }
        }
        foreach (var pattern in targets)
            if (SelectsOnlyEmbeddings(pattern))
                throw ShrinkException.InFile(source, $"target '{pattern}': token embeddings (embed_tokens) cannot be compressed by a recipe, since the " +
                    "GPTQ layout has no quantized embedding; they are kept as stored, and `llmshrink export --format gguf --type …` quantizes them");
        _targets = targets;
        _ignore = ignore;
    }

    public static TargetSelector AllLinears(string source) => new(["Linear"], [], source);

    public bool Matches(int layer, LinearRole role) =>
        _targets.Any(p => Match(p, layer, role)) && !_ignore.Any(p => Match(p, layer, role));

    /// <summary>The target patterns that select no module of a model with <paramref name="layers"/> blocks: a typo in a module
    /// name or a regex would otherwise leave the layers it meant uncompressed without a word.</summary>
    public IEnumerable<string> Unmatched(int layers) =>
        _targets.Where(p => !Enumerable.Range(0, layers).Any(l => LinearRoles.All.Any(r => Match(p, l, r))) && !Match(p, layers, LinearRole.LmHead));

    private static bool Match(string pattern, int layer, LinearRole role) =>
        pattern == "Linear" ? role != LinearRole.LmHead
        : pattern == LinearRoles.ModuleName(role) || pattern.StartsWith("re:", StringComparison.Ordinal) && Regex.IsMatch(LinearRoles.ModulePath(layer, role), pattern[3..]);

    /// <summary>
    /// "embed_tokens" by name or type, or a regex that selects the embedding module and no linear (a catch-all such as
    /// "re:.*" also matches lm_head or the block linears and stays valid: it selects those).
    /// </summary>
    private static bool SelectsOnlyEmbeddings(string pattern)
    {
        if (pattern is "embed_tokens" or "model.embed_tokens" or "Embedding") return true;
        if (!pattern.StartsWith("re:", StringComparison.Ordinal) || !Regex.IsMatch("model.embed_tokens", pattern[3..])) return false;
        return !Enum.GetValues<LinearRole>().Any(role => Regex.IsMatch(LinearRoles.ModulePath(0, role), pattern[3..]));
    }
}
