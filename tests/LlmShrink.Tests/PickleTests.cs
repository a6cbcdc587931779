using LlmShrink.Formats;
using LlmShrink.Model;
using Xunit;

namespace LlmShrink.Tests;

public class PickleTests
{
    [Theory]
    [InlineData(new byte[] { (byte)'P', (byte)'K', 3, 4, 20, 0, 0, 0 }, true)]  // torch.save since 1.6: a zip archive
    [InlineData(new byte[] { 0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc }, true)]       // legacy torch.save: protocol 2, LONG1 magic number
    [InlineData(new byte[] { 0x80, 0x04, 0x95, 0x10, 0, 0, 0, 0 }, true)]       // protocol 4 with a FRAME
    [InlineData(new byte[] { 0x80, 0x02, 0x00, 0x00, 0x00, 0x03, 0, 0 }, false)] // llama2.c header with dim 640
    [InlineData(new byte[] { 0x80, 0x01, 0x00, 0x00 }, false)]                  // llama2.c header with dim 384
    [InlineData(new byte[] { 0x20, 0x01, 0x00, 0x00 }, false)]                  // llama2.c header with dim 288
    [InlineData(new byte[] { (byte)'P', (byte)'K' }, false)]
    [InlineData(new byte[0], false)]
    public void RecognizesPicklesFromTheirFirstBytes(byte[] start, bool expected)
    {
        using var dir = new TempDir();
        File.WriteAllBytes(dir.File("x.bin"), start);
        Assert.Equal(expected, PickleCheckpoint.IsPickle(dir.File("x.bin")));
    }

    [Theory]
    [InlineData("pytorch_model.bin")]
    [InlineData("checkpoint.bin")]
    public void BinLoaderRefusesPicklesWithConversionAdvice(string name)
    {
        using var dir = new TempDir();
        string path = dir.File(name);
        // A zip header followed by junk: the file must be refused from its first bytes, never parsed.
        File.WriteAllBytes(path, [(byte)'P', (byte)'K', 3, 4, .. new byte[100]]);
        var e = Assert.Throws<ShrinkException>(() => ModelLoader.Load(path));
        Assert.Equal(path + ": this is a PyTorch pickle checkpoint, which LlmShrink does not load because unpickling can run arbitrary code; " +
            "convert the model to safetensors first, e.g. in Python with transformers: " +
            "AutoModelForCausalLM.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)", e.Message);

        File.WriteAllBytes(path, [0x80, 0x02, 0x8a, 0x0a, .. new byte[100]]);
        Assert.Contains("PyTorch pickle", Assert.Throws<ShrinkException>(() => Llama2cModelLoader.Load(path, null)).Message);
    }

    [Fact]
    public void MissingFileIsAUserError()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<ShrinkException>(() => PickleCheckpoint.IsPickle(dir.File("nope.bin")));
        Assert.Equal(dir.File("nope.bin") + ": file not found", e.Message);
    }
}
