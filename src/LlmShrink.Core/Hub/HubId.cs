namespace LlmShrink.Hub;

/// <summary>A Hugging Face model id <c>org/name</c> with an optional <c>@revision</c> (branch, tag or commit).</summary>
public sealed record HubId(string Repo, string Revision)
{
    public static bool TryParse(string text, out HubId id) => throw new NotImplementedException();
}
