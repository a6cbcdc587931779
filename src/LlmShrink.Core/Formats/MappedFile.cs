using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;

namespace LlmShrink.Formats;

/// <summary>
/// A whole file mapped read-only into memory. Tensors point straight into the mapping, so weights are
/// never copied into managed arrays; the OS pages them in on demand and may drop them under pressure.
/// </summary>
public sealed unsafe partial class MappedFile : IDisposable
{
    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private byte* _base;

    public string Path { get; }
    public long Length { get; }

    public MappedFile(string path)
    {
        Path = path;
        FileStream stream;
        try
        {
            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        }
        catch (FileNotFoundException) { throw ShrinkException.InFile(path, "file not found"); }
        catch (DirectoryNotFoundException) { throw ShrinkException.InFile(path, "file not found"); }
        catch (UnauthorizedAccessException) { throw ShrinkException.InFile(path, "permission denied"); }
        Length = stream.Length;
        if (Length == 0) { stream.Dispose(); return; } // an empty file cannot be mapped; readers report it as truncated
        _map = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
        _view = _map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref _base);
        _base += _view.PointerOffset;
    }

    /// <summary>Pointer to byte <paramref name="offset"/>; the caller has checked the range with <see cref="Contains"/>.</summary>
    public byte* Pointer(long offset) => _base + offset;

    public bool Contains(long offset, long count) => offset >= 0 && count >= 0 && offset <= Length && count <= Length - offset;

    /// <summary>Bytes [offset, offset+count); throws a user error naming the file when the range is past the end.</summary>
    public ReadOnlySpan<byte> Span(long offset, int count)
    {
        if (!Contains(offset, count)) throw ShrinkException.InFile(Path, $"truncated: needs bytes {offset}..{offset + count} but the file has {Length}");
        return new ReadOnlySpan<byte>(_base + offset, count);
    }

    /// <summary>
    /// Tells the OS this process is done with bytes [offset, offset+count) for now, so their pages leave its resident
    /// set (a compressed block's weights would otherwise stay counted for the rest of a run: ~0.4 GB per llama-2-7b
    /// block). The data stays readable: a later access pages it in again from the file. Only whole pages inside the
    /// range are released. Linux only (madvise MADV_DONTNEED through a P/Invoke into libc); elsewhere it does nothing.
    /// </summary>
    public void Release(long offset, long count)
    {
        if (!Contains(offset, count)) throw new ArgumentOutOfRangeException(nameof(count), $"bytes {offset}..{offset + count} are outside {Path} ({Length} bytes)");
        if (_base == null || !OperatingSystem.IsLinux()) return;
        // The mapping starts on a page boundary (the view's pointer offset is the file offset within its first page).
        long start = (long)_base + offset, end = start + count;
        long page = Environment.SystemPageSize;
        long first = (start + page - 1) / page * page, last = end / page * page;
        if (last <= first) return;
        Madvise((nint)first, (nuint)(last - first), MadviseDontNeed); // advice only: a failure leaves the pages resident
    }

    private const int MadviseDontNeed = 4;

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(nint address, nuint length, int advice);

    public void Dispose()
    {
        if (_view is not null && _base != null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _base = null;
        }
        _view?.Dispose();
        _map?.Dispose();
    }
}
