using LlmShrink.Model;

namespace LlmShrink.Export;

/// <summary>
/// The Q/K row orders of the two RoPE conventions. Within each head of <c>d</c> rows, Hugging Face's rotate-half pairs
/// row i with row i + d/2; the interleaved convention (Meta's original Llama, llama2.c, llama.cpp's "llama" graphs)
/// pairs rows 2i and 2i+1. llama.cpp's converter therefore stores interleaved row 2i + j (j = 0, 1) from rotate-half
/// row j·d/2 + i (its <c>permute</c>: reshape to [heads, 2, d/2, in], swap the middle axes), which makes the
/// interleaved rotation compute exactly what rotate-half computed. Only whole rows move, so values are unchanged.
/// </summary>
public static class RopeRowOrder
{
    /// <summary>
    /// For output row r, the source row it comes from when converting a [heads·headDim, in] Q or K weight from
    /// <paramref name="from"/> to <paramref name="to"/>; null when the conventions agree.
    /// </summary>
    public static Func<long, long>? SourceRow(RopeStyle from, RopeStyle to, int headDim)
    {
        if (from == to) return null;
        long half = headDim / 2;
        return from == RopeStyle.RotateHalf
            ? r => { long head = r / headDim, within = r % headDim; return head * headDim + (within % 2) * half + within / 2; }
            : r => { long head = r / headDim, within = r % headDim; return head * headDim + 2 * (within % half) + within / half; };
    }
}
