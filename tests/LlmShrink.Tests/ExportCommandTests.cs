using LlmShrink.Cli.Commands;
using LlmShrink.Model;
using Xunit;

namespace LlmShrink.Tests;

public class ExportCommandTests
{
    [Theory]
    [InlineData("5GB", 5_000_000_000L)]
    [InlineData("500MB", 500_000_000L)]
    [InlineData("2GiB", 2L << 30)]
    [InlineData("1.5kb", 1_500L)]
    [InlineData("123", 123L)]
    public void Shard_sizes_parse(string text, long bytes) => Assert.Equal(bytes, ExportCommand.ParseSize(text));

    [Theory]
    [InlineData("gguf", "Q5_1", null, null, "--type Q5_1: unsupported")]
    [InlineData("gguf", null, null, null, "--format gguf needs --type")]
    [InlineData("gguf", "F16", "F16", null, "--dtype and --max-shard-size apply to --format safetensors")]
    [InlineData("safetensors", null, "Q8_0", null, "--dtype Q8_0: unsupported")]
    [InlineData("safetensors", "F16", null, null, "--type applies to --format gguf")]
    [InlineData("safetensors", null, "F16", "lots", "--max-shard-size lots: not a size")]
    [InlineData("onnx", null, null, null, "--format onnx: unknown format")]
    public void Bad_arguments_are_one_line_user_errors(string format, string? type, string? dtype, string? shard, string message)
    {
        using var dir = new TempDir();
        var error = Assert.Throws<ShrinkException>(() => ExportCommand.Run(SharedData.Stories260K, format, type, dtype, dir.File("out"), shard, null));
        Assert.StartsWith(message, error.Message);
        Assert.DoesNotContain('\n', error.Message);
        Assert.Empty(Directory.GetFileSystemEntries(dir.Path));
    }

    [Fact]
    public void The_command_line_exports_a_loadable_gguf()
    {
        using var dir = new TempDir();
        string output = dir.File("s.gguf");
        int code = ExportCommand.Create().Parse([SharedData.Stories260K, "--format", "gguf", "--type", "q8_0", "--out", output]).Invoke();
        Assert.Equal(0, code);
        using var model = ModelLoader.Load(output);
        Assert.Equal(Formats.TensorType.Q8_0, model.Weights.Get(TensorNames.Layer(0, TensorNames.Q)).Type);
    }
}
