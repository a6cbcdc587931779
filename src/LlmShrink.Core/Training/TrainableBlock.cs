namespace LlmShrink.Training;

/// <summary>One decoder block's parameters, named and shaped as the checkpoint stores them.</summary>
public sealed class TrainableBlock
{
    public required Parameter AttnNorm { get; init; }
    public required Parameter FfnNorm { get; init; }
    public required Parameter Q { get; init; }
    public required Parameter K { get; init; }
    public required Parameter V { get; init; }
    public required Parameter O { get; init; }
    public required Parameter Gate { get; init; }
    public required Parameter Up { get; init; }
    public required Parameter Down { get; init; }
    /// <summary>q/k/v biases (qwen2), else null.</summary>
    public Parameter? QBias { get; init; }
    public Parameter? KBias { get; init; }
    public Parameter? VBias { get; init; }
    /// <summary>Per-head RMSNorm gains of q and k (qwen3), else null.</summary>
    public Parameter? QNorm { get; init; }
    public Parameter? KNorm { get; init; }

    /// <summary>Every parameter of the block, in forward order.</summary>
    public IEnumerable<Parameter> Parameters =>
        new[] { AttnNorm, Q, QBias, K, KBias, V, VBias, QNorm, KNorm, O, FfnNorm, Gate, Up, Down }.OfType<Parameter>();
}
