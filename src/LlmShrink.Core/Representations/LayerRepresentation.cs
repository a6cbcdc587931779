using LlmShrink.Formats;
using LlmShrink.Model;

namespace LlmShrink.Representations;

/// <summary>
/// How one linear module [out, in] is stored in a checkpoint and run — the read side of a representation (dense, GPTQ-packed,
/// W8A8, …). A method decides numbers (a grid, a mask, int8 rows); the <see cref="CompressedLayer"/> it produces names its
/// representation, which writes those numbers as tensors; this class finds them again in any checkpoint, checks them,
/// builds the runtime layer and hands them to exports. Every representation is registered once in <see cref="LayerRepresentations"/>.
/// </summary>
public abstract class LayerRepresentation
{
    /// <summary>Short name used in reports and the checkpoint's config, e.g. "gptq".</summary>
    public abstract string Name { get; }

    /// <summary>Tensor name suffixes after the module path that hold this representation's weight (not the bias).</summary>
    public abstract IReadOnlyList<string> Suffixes { get; }

    /// <summary>Whether the plain float weight of the module is what is stored (then exports copy or re-encode that tensor).</summary>
    public virtual bool IsDense => false;

    /// <summary>Whether <paramref name="module"/>'s tensors in <paramref name="weights"/> are in this representation.</summary>
    public abstract bool Detect(TensorSet weights, string module);

    /// <summary>[out, in] as the tensors state it, their consistency checked (a malformed module is a one-line error naming the file).</summary>
    public abstract (int Out, int In) Shape(TensorSet weights, string module);

    /// <summary>Bits of each stored weight value (the code width; scales and other side data not counted), e.g. 4 for a 4-bit GPTQ module.</summary>
    public abstract int Bits(TensorSet weights, string module);

    /// <summary>The values the module stores for its weight: out × in, except where the representation stores fewer (low-rank factors).</summary>
    public virtual long Parameters(TensorSet weights, string module)
    {
        var (o, i) = Shape(weights, module);
        return (long)o * i;
    }

    /// <summary>
    /// The representation of what the module stores without any adapter beside it: itself, except for a compensated module,
    /// whose base is what the GGUF and GPTQ exports write (the compensation leaves as an adapter of its own).
    /// </summary>
    public virtual LayerRepresentation Base(TensorSet weights, string module) => this;

    /// <summary>The runnable layer (packed kernels run on the stored form; nothing is widened that need not be).</summary>
    public abstract Linear Load(TensorSet weights, string module, float[]? bias);

    /// <summary>The weights as integer levels times scales when the representation stores them so (exports keep them exactly); null otherwise.</summary>
    public virtual ScaledIntegerMatrix? Integers(TensorSet weights, string module) => null;

    /// <summary>
    /// The weight as ggml blocks, a tensor [out, in] of its block type, when the representation stores it so (a GGUF export
    /// copies those bytes unchanged, with their own type); null otherwise.
    /// </summary>
    public virtual StoredTensor? StoredBlocks(TensorSet weights, string module) => null;

    /// <summary>
    /// When the representation stores neither integer levels nor ggml blocks (low-rank factors): how to multiply the weight
    /// back to a float matrix [out, in], which exports write as a plain tensor. Deferred, so an export holds one module's
    /// product at a time. Null otherwise.
    /// </summary>
    public virtual Func<float[]>? Multiplied(TensorSet weights, string module) => null;

    /// <summary>
    /// A more compact form of a just-quantized layer this representation can hold (e.g. only the kept codes of a 2:4-pruned
    /// layer), or null. The context asks every registered representation in turn before storing the GPTQ layout.
    /// </summary>
    public virtual CompressedLayer? Compact(QuantizedLayer layer, bool[]? keep) => null;

    /// <summary>Checks the module has the shape the model configuration implies.</summary>
    public virtual void Check(TensorSet weights, string module, int outFeatures, int inFeatures, string source)
    {
        var (o, i) = Shape(weights, module);
        if (o != outFeatures || i != inFeatures)
            throw ShrinkException.InFile(source, $"module '{module}' ({Name}) is [{o}, {i}] but the model configuration implies [{outFeatures}, {inFeatures}]");
    }
}
