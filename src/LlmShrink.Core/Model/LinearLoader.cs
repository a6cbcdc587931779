using LlmShrink.Formats;
using LlmShrink.Representations;

namespace LlmShrink.Model;

/// <summary>
/// Builds the runnable layer for a linear module in whichever registered representation its tensors are stored
/// (<see cref="LayerRepresentations"/>: dense, GPTQ-packed, W8A8, …), so a checkpoint may mix them layer by layer.
/// </summary>
public static class LinearLoader
{
    public static Linear Load(TensorSet weights, string modulePath, int outFeatures, int inFeatures, StoredTensor? bias)
    {
        if (bias is not null) TensorShapes.Expect(bias, outFeatures);
        string source = weights.Files.FirstOrDefault()?.Path ?? modulePath;
        var representation = LayerRepresentations.Of(weights, modulePath, source);
        representation.Check(weights, modulePath, outFeatures, inFeatures, source);
        return representation.Load(weights, modulePath, bias?.ToFloatArray());
    }

    /// <summary>Checks a module's stored tensors have the shapes its features imply (done at load time).</summary>
    public static void Check(TensorSet weights, string modulePath, int outFeatures, int inFeatures, string source) =>
        LayerRepresentations.Of(weights, modulePath, source).Check(weights, modulePath, outFeatures, inFeatures, source);
}
