namespace LlmShrink.Training;

/// <summary>
/// What a fake-quantized layer (<see cref="FakeQuantization"/>) trains: <c>distill --quantized-train</c>. It concerns the
/// quantized layers only: a student's float tensors (embeddings, norms, an lm_head left float) train in either mode.
/// </summary>
public enum QuantizedTraining
{
    /// <summary>
    /// Latent float weights, group scales and (asymmetric grids) zero points, through the straight-through estimator:
    /// LLM-QAT (Liu et al. 2023) with EfficientQAT's learnable step sizes (Chen et al. 2024); codes may change.
    /// </summary>
    WeightsAndScales,
    /// <summary>Group scales only; the integer codes and zero points stay as stored: PEQA (Kim et al. 2023).</summary>
    Scales,
}
