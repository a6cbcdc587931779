namespace LlmShrink.Compression;

/// <summary>
/// One compression method (RTN, GPTQ, AWQ, SmoothQuant, …) as a recipe modifier. The sequential pipeline calls
/// <see cref="CompressBlock"/> once per decoder block, after gathering the statistics the method needs from
/// the block's real calibration inputs; the method replaces the layers it targets through the context.
/// </summary>
public interface ICompressionMethod
{
    /// <summary>Short name used in recipes and reports, e.g. "gptq".</summary>
    string Name { get; }

    /// <summary>Statistics of the targeted layers' inputs this method reads.</summary>
    StatisticsNeeds Needs { get; }

    void CompressBlock(BlockCompression block);

    /// <summary>Whether a recipe may point the method at lm_head (structured pruning has no head groups or channels there).</summary>
    bool CanTargetLmHead => true;
}
