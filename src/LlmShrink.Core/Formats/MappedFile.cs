using System.IO.MemoryMappedFiles;

namespace LlmShrink.Formats;

/// <summary>
/// A whole file mapped read-only into memory. Tensors point straight into the mapping, so weights are
/// never copied into managed arrays; the OS pages them in on demand and may drop them under pressure.
/// </summary>
public sealed unsafe class MappedFile : IDisposable
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
