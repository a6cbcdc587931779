using System.Buffers;
using System.Text;
using System.Text.Unicode;

namespace LlmShrink.Formats;

/// <summary>
/// Text inputs (evaluation and calibration corpora, recipes, candidate menus) are UTF-8. A model, an archive or a
/// UTF-16 file passed where text belongs is refused by its first bytes — a NUL or a byte sequence UTF-8 does not
/// allow — before any model is loaded, instead of being tokenized for minutes into garbage.
/// </summary>
public static class TextFile
{
    /// <summary>How much of a file <see cref="EnsureText"/> looks at: enough to see any binary header.</summary>
    private const int SniffBytes = 64 << 10;

    /// <summary>Throws a one-line <see cref="ShrinkException"/> unless the start of <paramref name="path"/> is UTF-8 text.</summary>
    public static void EnsureText(string path, string role)
    {
        var head = new byte[SniffBytes];
        int read;
        using (var stream = Open(path, role)) read = stream.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        var bytes = head.AsSpan(0, read);
        if (bytes.StartsWith((ReadOnlySpan<byte>)[0xFF, 0xFE]) || bytes.StartsWith((ReadOnlySpan<byte>)[0xFE, 0xFF]))
            throw ShrinkException.InFile(path, $"is UTF-16 text; {role} must be UTF-8 (convert it, e.g. iconv -f UTF-16 -t UTF-8)");
        int nul = bytes.IndexOf((byte)0);
        if (nul >= 0) throw ShrinkException.InFile(path, $"is a binary file, not {role} (NUL byte at offset {nul})");
        int invalid = FirstInvalidUtf8(bytes, endsEarly: read == head.Length);
        if (invalid >= 0) throw ShrinkException.InFile(path, $"is not UTF-8 text, so it cannot be {role} (invalid byte 0x{bytes[invalid]:X2} at offset {invalid})");
    }

    /// <summary>The whole file as a string, after <see cref="EnsureText"/>; a bad byte later on is refused too.</summary>
    public static string ReadAll(string path, string role)
    {
        using var reader = OpenReader(path, role);
        return Read(path, role, reader.ReadToEnd);
    }

    /// <summary>
    /// A strict UTF-8 reader over <paramref name="path"/> (after <see cref="EnsureText"/>): a bad byte later in the file
    /// stops reading with a one-line error instead of turning into U+FFFD. Read it through <see cref="Read{T}"/>.
    /// </summary>
    public static StreamReader OpenReader(string path, string role)
    {
        EnsureText(path, role);
        var strict = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
        return new StreamReader(Open(path, role), strict, detectEncodingFromByteOrderMarks: true /* only a UTF-8 mark passes EnsureText */);
    }

    /// <summary>Runs one read of an <see cref="OpenReader"/> reader, turning a decoding or I/O failure into a one-line error.</summary>
    public static T Read<T>(string path, string role, Func<T> read)
    {
        try { return read(); }
        catch (DecoderFallbackException) { throw ShrinkException.InFile(path, $"is not UTF-8 text throughout, so it cannot be {role}"); }
        catch (IOException e) { throw ShrinkException.InFile(path, $"cannot read {role}: {e.Message}"); }
    }

    private static FileStream Open(string path, string role)
    {
        try { return new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16); }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException) { throw ShrinkException.InFile(path, "file not found"); }
        catch (UnauthorizedAccessException) { throw ShrinkException.InFile(path, "permission denied"); }
        catch (IOException e) { throw ShrinkException.InFile(path, $"cannot read {role}: {e.Message}"); }
    }

    /// <summary>Offset of the first byte that cannot start or continue a UTF-8 character, or −1. A character cut off by
    /// the end of a sniffed prefix (<paramref name="endsEarly"/>) is not an error.</summary>
    private static int FirstInvalidUtf8(ReadOnlySpan<byte> bytes, bool endsEarly)
    {
        var chars = new char[bytes.Length]; // UTF-8 never takes fewer bytes than UTF-16 takes chars
        var status = Utf8.ToUtf16(bytes, chars, out int bytesRead, out _, replaceInvalidSequences: false, isFinalBlock: !endsEarly);
        return status == OperationStatus.InvalidData ? bytesRead : -1;
    }
}
