namespace LlmShrink.Training;

/// <summary>
/// <c>distill --lora-rank R --lora-alpha A [--lora-keep]</c>: adapters of rank R scaled by A/R on every block linear
/// (<see cref="LoraAdapters"/>), merged into the written weights or kept beside them (<see cref="TrainedCheckpoint"/>).
/// </summary>
public sealed record LoraSettings(int Rank, float Alpha, bool Keep)
{
    /// <summary>
    /// α = 2r: LLM-Pruner's LoRA recovery of pruned LLaMA (Ma et al. 2023, r = 8, α = 16), the setting this option is for;
    /// with AdamW, whose steps do not grow with the gradient, the scale α/r multiplies how far B·A moves per step, and
    /// α = r (scale 1, Hu et al.'s "set α to the first r we try") recovered less at the same rate on tinylit-8m (docs/BENCHMARKS.md).
    /// </summary>
    public static float DefaultAlpha(int rank) => 2f * rank;

    public float Scale => Alpha / Rank;
}
