namespace LlmShrink.Compression.Quantization;

/// <summary>Which weights share one (scale, zero) pair.</summary>
public enum QuantGranularity
{
    /// <summary>One grid for the whole matrix.</summary>
    PerTensor,
    /// <summary>One grid per output row (per output channel).</summary>
    PerChannel,
    /// <summary>One grid per output row and per run of <see cref="QuantScheme.GroupSize"/> input columns.</summary>
    PerGroup,
}

/// <summary>
/// How a weight matrix W [out, in] is mapped to integer codes: bit width, symmetric or asymmetric grid,
/// and which weights share a grid. GPTQ-style checkpoints use e.g. 4 bits, per-group 128.
/// </summary>
public sealed record QuantScheme
{
    public int Bits { get; }
    public bool Symmetric { get; }
    public QuantGranularity Granularity { get; }
    /// <summary>Input columns per group (32, 64 or 128) for <see cref="QuantGranularity.PerGroup"/>; 0 otherwise.</summary>
    public int GroupSize { get; }

    public QuantScheme(int bits, bool symmetric, QuantGranularity granularity, int groupSize = 0)
    {
        if (bits is not (2 or 3 or 4 or 8))
            throw new ShrinkException($"quantization scheme: bits must be 2, 3, 4 or 8, not {bits}");
        if (granularity == QuantGranularity.PerGroup && groupSize is not (32 or 64 or 128))
            throw new ShrinkException($"quantization scheme: group size must be 32, 64 or 128, not {groupSize}");
        if (granularity != QuantGranularity.PerGroup && groupSize != 0)
            throw new ShrinkException($"quantization scheme: a group size ({groupSize}) needs per-group granularity");
        Bits = bits;
        Symmetric = symmetric;
        Granularity = granularity;
        GroupSize = groupSize;
    }

    /// <summary>Per-group scheme, the common GPTQ/AWQ case (e.g. 4 bits, 128 columns).</summary>
    public static QuantScheme Grouped(int bits, int groupSize, bool symmetric) =>
        new(bits, symmetric, QuantGranularity.PerGroup, groupSize);

    /// <summary>Largest code: codes are unsigned integers 0 .. 2^bits − 1.</summary>
    public int MaxCode => (1 << Bits) - 1;

    /// <summary>Input columns covered by one grid in a matrix with <paramref name="columns"/> inputs.</summary>
    public int GroupWidth(int columns) => Granularity == QuantGranularity.PerGroup ? GroupSize : columns;

    /// <summary>Number of column groups (rows of the checkpoint's scales tensor).</summary>
    public int GroupCount(int columns) => (columns + GroupWidth(columns) - 1) / GroupWidth(columns);

    public override string ToString() =>
        $"{Bits}-bit {(Symmetric ? "sym" : "asym")} " +
        (Granularity == QuantGranularity.PerGroup ? $"g{GroupSize}" : Granularity.ToString());
}
