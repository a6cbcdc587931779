namespace LlmShrink.Formats;

/// <summary>
/// Recognizes PyTorch's <c>torch.save</c> checkpoints (pytorch_model.bin and the like) so they can be refused.
/// They are Python pickles — since PyTorch 1.6 inside a zip archive — and unpickling can execute arbitrary code,
/// so LlmShrink never opens one beyond its first bytes and asks the user to convert it to safetensors.
/// </summary>
public static class PickleCheckpoint
{
    /// <summary>
    /// True for a zip archive ("PK\x03\x04", torch.save since 1.6) or a bare pickle: the PROTO opcode 0x80, a
    /// protocol number 2..5, then an opcode (never 0x00). The third-byte test keeps llama2.c files out: their
    /// first int32 is the model width, and e.g. width 640 starts 0x80 0x02 0x00 0x00.
    /// </summary>
    public static bool IsPickle(string path)
    {
        Span<byte> start = stackalloc byte[4];
        int read;
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
            read = stream.ReadAtLeast(start, start.Length, throwOnEndOfStream: false);
        }
        catch (FileNotFoundException) { throw ShrinkException.InFile(path, "file not found"); }
        catch (DirectoryNotFoundException) { throw ShrinkException.InFile(path, "file not found"); }
        catch (UnauthorizedAccessException) { throw ShrinkException.InFile(path, "permission denied"); }

        if (read >= 4 && start[0] == (byte)'P' && start[1] == (byte)'K' && start[2] == 3 && start[3] == 4) return true;
        return read >= 3 && start[0] == 0x80 && start[1] is >= 2 and <= 5 && start[2] != 0;
    }

    public static ShrinkException Refusal(string path) => ShrinkException.InFile(path,
        "this is a PyTorch pickle checkpoint, which LlmShrink does not load because unpickling can run arbitrary code; " +
        "convert the model to safetensors first, e.g. in Python with transformers: " +
        "AutoModelForCausalLM.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)");

    public static void ThrowIfPickle(string path)
    {
        if (IsPickle(path)) throw Refusal(path);
    }
}
