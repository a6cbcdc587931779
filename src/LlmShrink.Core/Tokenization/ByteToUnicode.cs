namespace LlmShrink.Tokenization;

/// <summary>
/// GPT-2's reversible map from the 256 byte values to printable characters, so byte-level BPE vocabularies can be
/// stored as text: printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') map to themselves, and every other byte, in
/// order, to U+0100, U+0101, … — which is why a space shows up as 'Ġ' (U+0120) and a newline as 'Ċ' (U+010A).
/// </summary>
public static class ByteToUnicode
{
    private static readonly char[] ByteToChar = BuildTable();
    private static readonly Dictionary<char, byte> CharToByte =
        Enumerable.Range(0, 256).ToDictionary(b => ByteToChar[b], b => (byte)b);

    private static char[] BuildTable()
    {
        var table = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            table[b] = printable ? (char)b : (char)next++;
        }
        return table;
    }

    /// <summary>The byte-level spelling of <paramref name="bytes"/>, one character per byte.</summary>
    public static string Encode(ReadOnlySpan<byte> bytes)
    {
        var chars = new char[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) chars[i] = ByteToChar[bytes[i]];
        return new string(chars);
    }

    /// <summary>Appends the bytes a byte-level token spells; a character outside the map (a malformed vocabulary) is kept as UTF-8.</summary>
    public static void Decode(string token, List<byte> output)
    {
        foreach (char c in token)
        {
            if (CharToByte.TryGetValue(c, out byte b)) output.Add(b);
            else output.AddRange(System.Text.Encoding.UTF8.GetBytes(c.ToString()));
        }
    }
}
