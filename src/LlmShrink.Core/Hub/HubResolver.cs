namespace LlmShrink.Hub;

/// <summary>Finds a Hugging Face repo in the local cache (HF_HOME / HF_HUB_CACHE layout), downloading it when missing and allowed.</summary>
public sealed class HubResolver
{
    public static HubResolver FromEnvironment() => throw new NotImplementedException();
    /// <summary>Local snapshot folder of <paramref name="id"/>.</summary>
    public string Resolve(HubId id) => throw new NotImplementedException();
}
