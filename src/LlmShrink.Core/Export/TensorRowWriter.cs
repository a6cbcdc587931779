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
    public static void Write(Stream output, StoredTensor tensor, TensorType type, Func<long, long>? sourceRow = null)
    {
        int columns = checked((int)tensor.Columns);
        int rowBytes = checked((int)TensorTypes.ByteCount(type, columns));
        long rows = tensor.Rows;
        if (rows == 0 || rowBytes == 0) return;
        int batchRows = (int)Math.Clamp(BatchBytes / rowBytes, 1, rows);
        var buffer = new byte[(long)batchRows * rowBytes];
        bool copy = tensor.Type == type;

        for (long first = 0; first < rows; first += batchRows)
        {
            int count = (int)Math.Min(batchRows, rows - first);
            long start = first;
            void EncodeRow(int i, float[] scratch)
            {
                long source = sourceRow?.Invoke(start + i) ?? start + i;
                var destination = buffer.AsSpan(i * rowBytes, rowBytes);
                if (copy) tensor.RowBytes(source).CopyTo(destination);
                else
                {
                    tensor.DequantizeRow(source, scratch);
                    TensorEncoding.EncodeRow(type, scratch, destination);
                }
            }
            if (copy || count == 1) { var scratch = new float[columns]; for (int i = 0; i < count; i++) EncodeRow(i, scratch); }
            else Parallel.For(0, count, () => new float[columns], (i, _, scratch) => { EncodeRow(i, scratch); return scratch; }, _ => { });
            output.Write(buffer, 0, count * rowBytes);
        }
    }
}
