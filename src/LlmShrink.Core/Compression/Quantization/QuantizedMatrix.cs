namespace LlmShrink.Compression.Quantization;

/// <summary>
/// A quantized linear weight W [out, in] (y = W x): one unsigned code per weight plus a grid per
/// (column group, output row). Column c of the matrix uses group <see cref="GroupIndex"/>[c]; that is the
/// identity-order c / G unless GPTQ's act_order reordered the columns before grouping them.
/// Ŵ[r, c] = Scales[g, r] · (Codes[r, c] − Zeros[g, r]) with g = GroupIndex[c].
/// </summary>
public sealed class QuantizedMatrix
{
    public int Rows { get; }
    public int Columns { get; }
    public QuantScheme Scheme { get; }
    public int GroupCount { get; }
    /// <summary>Codes, row-major [Rows, Columns], each in [0, 2^bits − 1].</summary>
    public byte[] Codes { get; }
    /// <summary>Grid scales, [GroupCount, Rows] (the checkpoint's layout); float16-representable.</summary>
    public float[] Scales { get; }
    /// <summary>Grid zero points, [GroupCount, Rows].</summary>
    public int[] Zeros { get; }
    /// <summary>Group of each input column, [Columns].</summary>
    public int[] GroupIndex { get; }

    public QuantizedMatrix(int rows, int columns, QuantScheme scheme, int groupCount,
        byte[] codes, float[] scales, int[] zeros, int[] groupIndex)
    {
        if (codes.Length != (long)rows * columns || scales.Length != (long)groupCount * rows ||
            zeros.Length != scales.Length || groupIndex.Length != columns)
            throw new ArgumentException("quantized matrix: array lengths do not match its shape");
        Rows = rows;
        Columns = columns;
        Scheme = scheme;
        GroupCount = groupCount;
        Codes = codes;
        Scales = scales;
        Zeros = zeros;
        GroupIndex = groupIndex;
    }

    /// <summary>An empty matrix with identity-order groups (column c in group c / G).</summary>
    public static QuantizedMatrix Create(int rows, int columns, QuantScheme scheme)
    {
        int groups = scheme.GroupCount(columns), width = scheme.GroupWidth(columns);
        var groupIndex = new int[columns];
        for (int c = 0; c < columns; c++) groupIndex[c] = c / width;
        return new QuantizedMatrix(rows, columns, scheme, groups, new byte[(long)rows * columns],
            new float[groups * rows], new int[groups * rows], groupIndex);
    }

    public QuantGrid Grid(int group, int row) =>
        new(Scales[group * Rows + row], Zeros[group * Rows + row], Scheme.MaxCode);

    public void SetGrid(int group, int row, QuantGrid grid)
    {
        Scales[group * Rows + row] = grid.Scale;
        Zeros[group * Rows + row] = grid.Zero;
    }

    /// <summary>Ŵ as float32, row-major [Rows, Columns].</summary>
    public float[] Dequantize()
    {
        var w = new float[(long)Rows * Columns];
        for (int r = 0; r < Rows; r++)
        {
            int rowStart = r * Columns;
            for (int c = 0; c < Columns; c++)
            {
                int g = GroupIndex[c] * Rows + r;
                w[rowStart + c] = Scales[g] * (Codes[rowStart + c] - Zeros[g]);
            }
        }
        return w;
    }
}
