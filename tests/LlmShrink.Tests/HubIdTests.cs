using Xunit;
using LlmShrink.Hub;

namespace LlmShrink.Tests;

public class HubIdTests
{
    [Theory]
    [InlineData("meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-1B", "main")]
    [InlineData("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct", "main")]
    [InlineData("org/name@v1.0", "org/name", "v1.0")]
    [InlineData("org/name@dev_branch-2", "org/name", "dev_branch-2")]
    [InlineData("TinyLlama/TinyLlama_v1.1@3f1c2a9be0d4c5e6f708192a3b4c5d6e7f809a1b",
        "TinyLlama/TinyLlama_v1.1", "3f1c2a9be0d4c5e6f708192a3b4c5d6e7f809a1b")]
    public void Accepts_hub_ids(string text, string repo, string revision)
    {
        Assert.True(HubId.TryParse(text, out var id));
        Assert.Equal(new HubId(repo, revision), id);
        Assert.Equal(text, id.ToString());
    }

    [Theory]
    [InlineData("")]
    [InlineData("gpt2")]                       // no org: could be any file name
    [InlineData("./org/name")]
    [InlineData("../org/name")]
    [InlineData("/org/name")]
    [InlineData("~/name")]
    [InlineData("~org/name")]
    [InlineData("models/llama/7b")]            // more than one '/'
    [InlineData("org\\name")]
    [InlineData("C:\\models\\x")]
    [InlineData("org/")]
    [InlineData("/name")]
    [InlineData("org//name")]
    [InlineData("org/name@")]
    [InlineData("org/name@a/b")]
    [InlineData("org/name@x@y")]
    [InlineData("org/..")]
    [InlineData("org/a..b")]
    [InlineData("org/.hidden")]
    [InlineData("org/-name")]
    [InlineData("org/na me")]
    [InlineData("org/naïve")]
    [InlineData("org/na--me")]                 // "--" is the cache folder's separator
    [InlineData("models/llama.gguf")]          // a mistyped file path, not a repo
    [InlineData("out/model.safetensors")]
    [InlineData("ckpt/stories15M.bin")]
    [InlineData("data/config.json")]
    public void Rejects_paths_and_malformed_ids(string text) => Assert.False(HubId.TryParse(text, out _));

    [Fact]
    public void Names_its_cache_folder_like_huggingface_hub()
    {
        Assert.True(HubId.TryParse("meta-llama/Llama-3.2-1B@main", out var id));
        Assert.Equal("models--meta-llama--Llama-3.2-1B", id.CacheFolderName);
        Assert.Equal("meta-llama/Llama-3.2-1B", id.ToString());
        Assert.False(id.RevisionIsCommit);
        Assert.True(new HubId("a/b", "3f1c2a9be0d4c5e6f708192a3b4c5d6e7f809a1b").RevisionIsCommit);
    }
}
