namespace LlmShrink.Formats;

/// <summary>
/// The codebooks of llama.cpp's I-quants. A block stores, per group of 8 (or 4) weights, an index into one of these
/// grids; the entry is the group's magnitudes (the signs are stored apart), or for IQ1_S/IQ1_M its values in {−1, 0, 1}.
/// The grids are part of the formats, defined as tables in ggml-common.h (iq2xxs_grid, iq2xs_grid, iq2s_grid,
/// iq3xxs_grid, iq3s_grid, iq1s_grid). Each is embedded from IQuantGrids/NAME.bin, the table's elements as little-endian
/// bytes (so entry i is bytes w·i … w·i + w − 1, w the entry width), written by tools/extract_iquant_grids.py from
/// llama.cpp commit c392e50.
/// </summary>
internal static class IQuantGrids
{
    /// <summary>IQ2_XXS: 256 entries of 8 magnitudes from {8, 25, 43}.</summary>
    public static readonly byte[] Iq2Xxs = Load("iq2xxs_grid", 256, 8);
    /// <summary>IQ2_XS: 512 entries of 8 magnitudes from {8, 25, 43}.</summary>
    public static readonly byte[] Iq2Xs = Load("iq2xs_grid", 512, 8);
    /// <summary>IQ2_S: 1024 entries of 8 magnitudes from {8, 25, 43}.</summary>
    public static readonly byte[] Iq2S = Load("iq2s_grid", 1024, 8);
    /// <summary>IQ3_XXS: 256 entries of 4 magnitudes from {4, 12, 20, 28, 36, 44, 52, 62}.</summary>
    public static readonly byte[] Iq3Xxs = Load("iq3xxs_grid", 256, 4);
    /// <summary>IQ3_S: 512 entries of 4 magnitudes from the odd numbers 1 … 15.</summary>
    public static readonly byte[] Iq3S = Load("iq3s_grid", 512, 4);
    /// <summary>IQ1_S and IQ1_M: 2048 entries of 8 values from {−1, 0, 1}.</summary>
    public static readonly sbyte[] Iq1S = Array.ConvertAll(Load("iq1s_grid", 2048, 8), b => (sbyte)b);

    private static byte[] Load(string name, int entries, int entryBytes)
    {
        using var stream = typeof(IQuantGrids).Assembly.GetManifestResourceStream($"IQuantGrids.{name}.bin")
            ?? throw new InvalidOperationException($"the {name} codebook is not embedded in {typeof(IQuantGrids).Assembly.GetName().Name}");
        var grid = new byte[entries * entryBytes];
        stream.ReadExactly(grid);
        if (stream.ReadByte() != -1) throw new InvalidOperationException($"the embedded {name} codebook is longer than {entries} entries of {entryBytes} bytes");
        return grid;
    }
}
