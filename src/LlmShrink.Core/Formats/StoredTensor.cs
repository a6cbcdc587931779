namespace LlmShrink.Formats;

/// <summary>
/// One tensor as stored in a checkpoint: its name, shape (outermost dimension first, PyTorch order, so a
/// linear layer's weight is [out, in]), encoding, and its bytes inside a <see cref="MappedFile"/>.
/// Nothing is copied: <see cref="RowBytes"/> and <see cref="DequantizeRow"/> read straight from the mapping.
/// </summary>
public sealed unsafe class StoredTensor
{
    public string Name { get; }
    public long[] Shape { get; }
    public TensorType Type { get; }
    public MappedFile File { get; }
    public long Offset { get; }
    public long ByteLength { get; }

    /// <summary>Innermost dimension: elements per row (a linear layer's input features).</summary>
    public long Columns => Shape.Length == 0 ? 1 : Shape[^1];
    /// <summary>Product of all dimensions but the innermost.</summary>
    public long Rows { get; }
    public long ElementCount { get; }

    public StoredTensor(string name, long[] shape, TensorType type, MappedFile file, long offset)
    {
        Name = name;
        Shape = shape;
        Type = type;
        File = file;
        Offset = offset;
        long elements = 1;
        foreach (long d in shape)
        {
            if (d < 0) throw ShrinkException.InFile(file.Path, $"tensor '{name}' has negative dimension {d}");
            if (d != 0 && elements > long.MaxValue / d) throw ShrinkException.InFile(file.Path, $"tensor '{name}' has an impossibly large shape");
            elements *= d;
        }
        ElementCount = elements;
        Rows = shape.Length == 0 ? 1 : (shape[^1] == 0 ? 0 : elements / shape[^1]);
        if (Columns % TensorTypes.BlockElements(type) != 0)
            throw ShrinkException.InFile(file.Path, $"tensor '{name}' has {Columns} columns, not a multiple of the {type} block size {TensorTypes.BlockElements(type)}");
        try { ByteLength = TensorTypes.ByteCount(type, elements); }
        catch (OverflowException) { throw ShrinkException.InFile(file.Path, $"tensor '{name}' has an impossibly large shape"); }
        if (!file.Contains(offset, ByteLength))
            throw ShrinkException.InFile(file.Path, $"tensor '{name}' data (offset {offset}, {ByteLength} bytes) lies past the end of the file ({file.Length} bytes)");
    }

    public long RowByteLength => TensorTypes.ByteCount(Type, Columns);

    /// <summary>Start of the tensor's bytes in the mapping (valid while the file is open).</summary>
    public byte* Pointer => File.Pointer(Offset);

    /// <summary>All of the tensor's bytes (tensors under 2 GiB).</summary>
    public ReadOnlySpan<byte> Bytes() =>
        ByteLength <= int.MaxValue ? new ReadOnlySpan<byte>(Pointer, (int)ByteLength)
        : throw ShrinkException.InFile(File.Path, $"tensor '{Name}' is larger than 2 GiB and must be read row by row");

    public ReadOnlySpan<byte> RowBytes(long row)
    {
        if ((ulong)row >= (ulong)Rows) throw new ArgumentOutOfRangeException(nameof(row));
        long rowBytes = RowByteLength;
        return new ReadOnlySpan<byte>(File.Pointer(Offset + row * rowBytes), checked((int)rowBytes));
    }

    /// <summary>Decodes row <paramref name="row"/> into <paramref name="destination"/> (length = <see cref="Columns"/>).</summary>
    public void DequantizeRow(long row, Span<float> destination) =>
        TensorDecoding.DecodeRow(Type, RowBytes(row), destination[..checked((int)Columns)]);

    /// <summary>Decodes the whole tensor into a new float array (a conversion: use only when a copy is intended).</summary>
    public float[] ToFloatArray()
    {
        var result = new float[checked((int)ElementCount)];
        int cols = checked((int)Columns);
        for (long r = 0; r < Rows; r++) DequantizeRow(r, result.AsSpan((int)(r * cols), cols));
        return result;
    }

    public override string ToString() => $"{Name} [{string.Join(", ", Shape)}] {Type}";
}
