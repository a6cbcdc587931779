namespace LlmShrink.Compression.Quantization;

/// <summary>
/// Round-to-nearest: each weight goes to the nearest point of its group's grid, the grid fitted to the
/// group's min/max. The baseline every calibration-based method (GPTQ, AWQ) must beat.
/// </summary>
public static class Rtn
{
    /// <summary>Quantizes W, row-major [rows, columns].</summary>
    public static QuantizedMatrix Quantize(ReadOnlySpan<float> w, int rows, int columns, QuantScheme scheme)
    {
        if (w.Length != (long)rows * columns)
            throw new ArgumentException($"RTN: weight has {w.Length} values, not {rows}×{columns}");
        var q = QuantizedMatrix.Create(rows, columns, scheme);
        var grids = FitGrids(w, rows, columns, scheme);
        int width = scheme.GroupWidth(columns);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
                q.Codes[r * columns + c] = (byte)grids[c / width * rows + r].Code(w[r * columns + c]);
        for (int g = 0; g < q.GroupCount; g++)
            for (int r = 0; r < rows; r++)
                q.SetGrid(g, r, grids[g * rows + r]);
        return q;
    }

    /// <summary>
    /// The min/max grid of every (column group, row) of W in identity column order, [groups, rows].
    /// Per-tensor schemes fit one grid to the whole matrix and repeat it for every row.
    /// </summary>
    public static QuantGrid[] FitGrids(ReadOnlySpan<float> w, int rows, int columns, QuantScheme scheme)
    {
        int groups = scheme.GroupCount(columns), width = scheme.GroupWidth(columns);
        var grids = new QuantGrid[groups * rows];
        if (scheme.Granularity == QuantGranularity.PerTensor)
        {
            Array.Fill(grids, QuantGrid.Fit(w, scheme.Bits, scheme.Symmetric));
            return grids;
        }
        for (int r = 0; r < rows; r++)
            for (int g = 0; g < groups; g++)
            {
                int start = g * width, count = Math.Min(width, columns - start);
                grids[g * rows + r] = QuantGrid.Fit(w.Slice(r * columns + start, count), scheme.Bits, scheme.Symmetric);
            }
        return grids;
    }

    /// <summary>Quantize-then-dequantize W in place (fake quantization), as AWQ's searches need.</summary>
    public static void FakeQuantize(Span<float> w, int rows, int columns, QuantScheme scheme)
    {
        var grids = FitGrids(w, rows, columns, scheme);
        int width = scheme.GroupWidth(columns);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
                w[r * columns + c] = grids[c / width * rows + r].Quantize(w[r * columns + c]);
    }
}
