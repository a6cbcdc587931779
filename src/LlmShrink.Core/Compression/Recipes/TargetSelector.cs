using System.Text.RegularExpressions;

namespace LlmShrink.Compression.Recipes;

/// <summary>
/// Which linear layers a modifier applies to, in llm-compressor's spirit: each target or ignore entry is "Linear"
/// (every block linear), a module name such as "q_proj", or "re:REGEX" matched against the full module path
/// (e.g. "model.layers.3.mlp.down_proj"). Ignore wins over targets.
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
        _targets = targets;
        _ignore = ignore;
    }

    public static TargetSelector AllLinears(string source) => new(["Linear"], ["lm_head"], source);

    public bool Matches(int layer, LinearRole role) =>
        _targets.Any(p => Match(p, layer, role)) && !_ignore.Any(p => Match(p, layer, role));

    private static bool Match(string pattern, int layer, LinearRole role) =>
        pattern == "Linear" || pattern == LinearRoles.ModuleName(role)
        || pattern.StartsWith("re:", StringComparison.Ordinal) && Regex.IsMatch(LinearRoles.ModulePath(layer, role), pattern[3..]);
}
