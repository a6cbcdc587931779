namespace LlmShrink.Formats;

/// <summary>
/// A write-only view of a stream that throws <see cref="OperationCanceledException"/> at the next write once its token is
/// cancelled. The writers hand it to every tensor producer, so a signal stops an export within one batch of rows (a few MB)
/// instead of after the tensor or the whole file, and their temporary output is deleted on the way out.
/// </summary>
public sealed class CancellableWriteStream(Stream inner, CancellationToken cancellation) : Stream
{
    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => inner.Length;

    public override long Position
    {
        get => inner.Position;
        set => throw new NotSupportedException();
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        cancellation.ThrowIfCancellationRequested();
        inner.Write(buffer);
    }

    public override void WriteByte(byte value)
    {
        cancellation.ThrowIfCancellationRequested();
        inner.WriteByte(value);
    }

    public override void Flush() => inner.Flush();
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
}
