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

    /// <summary>
    /// Whether the method must see the whole uncompressed model before the first block is compressed (fwsvd's Fisher
    /// information, svd-llm's rank allocation across depths): the pipeline then calls <see cref="Survey"/> once per run.
    /// </summary>
    bool SurveysModel => false;

    /// <summary>
    /// Called once per pipeline run, before the first block, when <see cref="SurveysModel"/> is set; the method keeps what
    /// it learns for this run's <see cref="CompressBlock"/> calls (a recipe's methods serve one run at a time).
    /// </summary>
    void Survey(ModelSurvey survey) { }

    /// <summary>Whether a recipe may point the method at lm_head (structured pruning has no head groups or channels there).</summary>
    bool CanTargetLmHead => true;
}
