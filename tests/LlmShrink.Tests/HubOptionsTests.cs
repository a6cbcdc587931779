using Xunit;
using LlmShrink.Hub;

namespace LlmShrink.Tests;

public class HubOptionsTests
{
    private const string Home = "/home/u";

    private static HubOptions From(params (string Name, string Value)[] variables)
    {
        var map = variables.ToDictionary(v => v.Name, v => v.Value);
        return HubOptions.FromVariables(name => map.GetValueOrDefault(name), Home);
    }

    [Fact]
    public void Cache_dir_follows_huggingface_hub_precedence()
    {
        Assert.Equal("/home/u/.cache/huggingface/hub", From().CacheDir);
        Assert.Equal("/x/huggingface/hub", From(("XDG_CACHE_HOME", "/x")).CacheDir);
        Assert.Equal("/h/hub", From(("XDG_CACHE_HOME", "/x"), ("HF_HOME", "/h")).CacheDir);
        Assert.Equal("/home/u/hf/hub", From(("HF_HOME", "~/hf")).CacheDir);
        Assert.Equal("/old", From(("HF_HOME", "/h"), ("HUGGINGFACE_HUB_CACHE", "/old")).CacheDir);
        Assert.Equal("/c", From(("HF_HOME", "/h"), ("HUGGINGFACE_HUB_CACHE", "/old"), ("HF_HUB_CACHE", "/c")).CacheDir);
        Assert.Equal("/home/u/.cache/huggingface/hub", From(("HF_HUB_CACHE", "")).CacheDir); // empty counts as unset
    }

    [Fact]
    public void Endpoint_offline_flag_and_token()
    {
        var defaults = From(("HF_TOKEN_PATH", "/nonexistent/token"));
        Assert.Equal("https://huggingface.co", defaults.Endpoint);
        Assert.False(defaults.Offline);
        Assert.Null(defaults.Token);

        Assert.Equal("http://mirror.local:8080", From(("HF_ENDPOINT", "http://mirror.local:8080/")).Endpoint);
        foreach (string on in new[] { "1", "true", "TRUE", "yes", "on" }) Assert.True(From(("HF_HUB_OFFLINE", on)).Offline);
        foreach (string off in new[] { "0", "false", "no", "" }) Assert.False(From(("HF_HUB_OFFLINE", off)).Offline);
        Assert.Equal("hf_abc", From(("HF_TOKEN", "hf_abc")).Token);
    }

    [Fact]
    public void Reads_the_saved_login_token_when_HF_TOKEN_is_unset()
    {
        using var home = new TempDir();
        File.WriteAllText(home.File("token"), "hf_saved\n");
        Assert.Equal("hf_saved", From(("HF_HOME", home.Path)).Token);
        Assert.Equal("hf_env", From(("HF_HOME", home.Path), ("HF_TOKEN", "hf_env")).Token);
    }
}
