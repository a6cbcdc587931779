using LlmShrink.Formats;
using Xunit;

namespace LlmShrink.Tests;

public class MappedFileTests
{
    const int Page = 4096;

    [Fact]
    public void ReleaseDropsTheWholePagesInsideTheRangeAndLeavesTheDataReadable()
    {
        using var dir = new TempDir();
        string path = dir.File("data.bin");
        var bytes = new byte[256 * Page + 100];
        new Random(7).NextBytes(bytes);
        File.WriteAllBytes(path, bytes);

        using var file = new MappedFile(path);
        Assert.True(file.Span(0, bytes.Length).SequenceEqual(bytes)); // touches every page
        long before = MappedKilobytes(path);

        // Bytes 100 .. 100 + 128 pages: the pages wholly inside are 1..128, 127 of them; the partial ones at both ends stay.
        file.Release(100, 128 * Page);
        if (OperatingSystem.IsLinux())
        {
            Assert.Equal(256 * Page / 1024 + 4, before);
            Assert.Equal(before - 127 * Page / 1024, MappedKilobytes(path));
        }
        Assert.True(file.Span(0, bytes.Length).SequenceEqual(bytes));

        file.Release(0, bytes.Length);
        if (OperatingSystem.IsLinux()) Assert.Equal(4, MappedKilobytes(path)); // the last, partial page stays
        Assert.True(file.Span(0, bytes.Length).SequenceEqual(bytes));
        Assert.Throws<ArgumentOutOfRangeException>(() => file.Release(bytes.Length - 10, 20));
    }

    /// <summary>Resident kilobytes of this process's mappings of <paramref name="path"/> (Linux /proc/self/smaps).</summary>
    static long MappedKilobytes(string path)
    {
        if (!OperatingSystem.IsLinux()) return 0;
        long total = 0;
        bool inMapping = false;
        foreach (var line in File.ReadLines("/proc/self/smaps"))
        {
            // A mapping's header ("start-end perms offset dev inode path") is followed by "Field: value" lines.
            if (!line.Split(' ', 2)[0].EndsWith(':')) inMapping = line.EndsWith(path, StringComparison.Ordinal);
            if (inMapping && line.StartsWith("Rss:", StringComparison.Ordinal))
                total += long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
        }
        return total;
    }
}
