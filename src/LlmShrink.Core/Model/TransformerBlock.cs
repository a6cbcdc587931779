namespace LlmShrink.Model;

/// <summary>
/// One decoder block's parameters. Norm weights are float32 copies and the linear layers are replaceable, so
/// compression methods can swap in quantized layers and fold smoothing scales into the norms (AWQ, SmoothQuant).
/// </summary>
public sealed class TransformerBlock
{
    public required float[] AttnNorm { get; init; }
    public required float[] FfnNorm { get; init; }
    public float[]? QNorm { get; init; }
    public float[]? KNorm { get; init; }
    public required Linear Q { get; set; }
    public required Linear K { get; set; }
    public required Linear V { get; set; }
    public required Linear O { get; set; }
    public required Linear Gate { get; set; }
    public required Linear Up { get; set; }
    public required Linear Down { get; set; }

    /// <summary>The seven linear layers, in the order a forward pass runs them.</summary>
    public Linear[] Linears => [Q, K, V, O, Gate, Up, Down];
}
