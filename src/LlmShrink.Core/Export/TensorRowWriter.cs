using LlmShrink.Formats;

namespace LlmShrink.Export;

/// <summary>
/// Streams a stored tensor to an output in another encoding, row by row, optionally reordering rows. Rows are encoded
/// in parallel a batch at a time (a few MB) and written in order, so memory stays bounded whatever the tensor's size.
/// A row already in the target type is copied byte for byte — re-exporting a quantized model at its own type loses nothing.
/// </summary>
public static class TensorRowWriter
{
    private const long BatchBytes = 4 << 20;

    /// <summary>Writes <paramref name="tensor"/>'s rows as <paramref name="type"/>; output row r is source row <paramref name="sourceRow"/>(r).</summary>
    public static void Write(Stream output, StoredTensor tensor, TensorType type, Func<long, long>? sourceRow = null) =>
        Write(output, tensor.Rows, checked((int)tensor.Columns), type, sourceRow, tensor.DequantizeRow,
            tensor.Type == type ? (row, destination) => tensor.RowBytes(row).CopyTo(destination) : null);

    /// <summary>Writes the float matrix <paramref name="matrix"/> [rows, <paramref name="columns"/>] as <paramref name="type"/>, rows ordered as above.</summary>
    public static void Write(Stream output, float[] matrix, int columns, TensorType type, Func<long, long>? sourceRow = null) =>
        Write(output, matrix.Length / columns, columns, type, sourceRow, (row, destination) => matrix.AsSpan(checked((int)(row * columns)), columns).CopyTo(destination), null);

    private delegate void DecodeRow(long row, Span<float> destination);
    private delegate void CopyRow(long row, Span<byte> destination);

    /// <param name="copy">Copies a source row's bytes when they are already in <paramref name="type"/>; null to decode and encode.</param>
    private static void Write(Stream output, long rows, int columns, TensorType type, Func<long, long>? sourceRow, DecodeRow decode, CopyRow? copy)
    {
        int rowBytes = checked((int)TensorTypes.ByteCount(type, columns));
        if (rows == 0 || rowBytes == 0) return;
        int batchRows = (int)Math.Clamp(BatchBytes / rowBytes, 1, rows);
        var buffer = new byte[(long)batchRows * rowBytes];

        for (long first = 0; first < rows; first += batchRows)
        {
            int count = (int)Math.Min(batchRows, rows - first);
            long start = first;
            void EncodeRow(int i, float[] scratch)
            {
                long source = sourceRow?.Invoke(start + i) ?? start + i;
                var destination = buffer.AsSpan(i * rowBytes, rowBytes);
                if (copy is not null) copy(source, destination);
                else
                {
                    decode(source, scratch);
                    TensorEncoding.EncodeRow(type, scratch, destination);
                }
            }
            if (copy is not null || count == 1) { var scratch = new float[columns]; for (int i = 0; i < count; i++) EncodeRow(i, scratch); }
            else Parallel.For(0, count, () => new float[columns], (i, _, scratch) => { EncodeRow(i, scratch); return scratch; }, _ => { });
            output.Write(buffer, 0, count * rowBytes);
        }
    }
}
