namespace LlmShrink.Training;

/// <summary>
/// <c>distill --lora-rank R --lora-alpha A [--lora-keep]</c>: adapters of rank R scaled by A/R on every block linear
/// (<see cref="LoraAdapters"/>), merged into the written weights or kept beside them (<see cref="TrainedCheckpoint"/>).
/// </summary>
public sealed record LoraSettings(int Rank, float Alpha, bool Keep)
{
    /// <summary>
    /// α = 2r: LLM-Pruner's LoRA recovery of pruned LLaMA (Ma et al. 2023, r = 8, α = 16), the setting this option is for.
    /// With AdamW, whose steps do not grow with the gradient, α/r multiplies how far B·A moves per step, so α and the
    /// learning rate trade against each other; on tinylit-8m drop-blocks-25 (r = 8, 40 steps of 4 × 64 at lr 1e-3) α = 8,
    /// 16, 32 closed 36 %, 39 %, 43 % of the held-out KL gap (docs/BENCHMARKS.md). The convention is kept rather than α
    /// tuned: a larger step is the learning rate's job.
    /// </summary>
    public static float DefaultAlpha(int rank) => 2f * rank;

    /// <summary>
    /// distill's --lr with --lora-rank: 1e-3, ten times the full-distillation default. Adapters start at B = 0 and hold a
    /// few percent of the values, and LoRA's best rates are about an order of magnitude above full fine-tuning's (Hu et al.
    /// 2021, Appendix D: 4e-4–5e-4 for RoBERTa against 1e-5–3e-5 fully fine-tuned); on tinylit-8m drop-blocks-25, 100 steps
    /// of 8 × 128 at 1e-4 closed 31.9 % of the held-out KL gap, at 1e-3 59.2 % (docs/BENCHMARKS.md).
    /// </summary>
    public const float DefaultRate = 1e-3f;

    public float Scale => Alpha / Rank;
}
