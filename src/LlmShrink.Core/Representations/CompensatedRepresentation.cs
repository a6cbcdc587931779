using LlmShrink.Compression.LowRank;
using LlmShrink.Formats;
using LlmShrink.Formats.Safetensors;
using LlmShrink.Model;

namespace LlmShrink.Representations;

/// <summary>
/// A compressed module with a low-rank compensation of its compression error (the <c>eora</c> method): the tensors of its
/// base — any other registered representation, e.g. GPTQ — plus two factors named as PEFT names a LoRA adapter's,
/// <c>lora_A.weight</c> A [rank, in] and <c>lora_B.weight</c> B [out, rank], each F16, BF16 or F32. The module computes
/// y = base(x) + (x·Aᵀ)·Bᵀ. A compressed folder keeps the factors in <see cref="FileName"/>, outside the shards and their
/// index, so GPTQ loaders see a plain GPTQ checkpoint; the adapter exports (PEFT, llama.cpp LoRA GGUF) rename them.
/// Exports that need one plain matrix get base + B·A (<see cref="Multiplied"/>). See docs/FORMAT.md.
/// </summary>
public sealed class CompensatedRepresentation : LayerRepresentation
{
    public static readonly CompensatedRepresentation Instance = new();

    /// <summary>The compressed folder's file of factors (see <see cref="IsFactor"/>), beside the shards and not in their index.</summary>
    public const string FileName = "compensation.safetensors";
    public const string ASuffix = ".lora_A.weight";
    public const string BSuffix = ".lora_B.weight";

    public override string Name => "compensated";
    /// <summary>The factors' suffixes; the base's tensors are its own representation's.</summary>
    public override IReadOnlyList<string> Suffixes { get; } = [ASuffix, BSuffix];

    /// <summary>Whether <paramref name="tensor"/> is a compensation factor (A or B of some module).</summary>
    public static bool IsFactor(string tensor) => tensor.EndsWith(ASuffix, StringComparison.Ordinal) || tensor.EndsWith(BSuffix, StringComparison.Ordinal);

    public override bool Detect(TensorSet weights, string module) => weights.Contains(module + ASuffix) && FindBase(weights, module) is not null;

    /// <summary>The representation of the module without its compensation.</summary>
    public override LayerRepresentation Base(TensorSet weights, string module) =>
        FindBase(weights, module) ?? throw ShrinkException.InFile(weights.Get(module + ASuffix).File.Path, $"module '{module}' has compensation factors but no weight");

    private static LayerRepresentation? FindBase(TensorSet weights, string module) =>
        LayerRepresentations.All.FirstOrDefault(r => r is not CompensatedRepresentation && r.Detect(weights, module));

    /// <summary>[out, in] of the base, the factors checked against it.</summary>
    public override (int Out, int In) Shape(TensorSet weights, string module)
    {
        var shape = Base(weights, module).Shape(weights, module);
        Factors(weights, module, shape);
        return shape;
    }

    public override void Check(TensorSet weights, string module, int outFeatures, int inFeatures, string source)
    {
        Base(weights, module).Check(weights, module, outFeatures, inFeatures, source);
        Factors(weights, module, (outFeatures, inFeatures));
    }

    /// <summary>The base's code width (the factors are floats beside it).</summary>
    public override int Bits(TensorSet weights, string module) => Base(weights, module).Bits(weights, module);

    /// <summary>The base's values plus the factors' rank·(out + in): what the module stores and multiplies by.</summary>
    public override long Parameters(TensorSet weights, string module)
    {
        var (a, b) = Factors(weights, module);
        return Base(weights, module).Parameters(weights, module) + a.ElementCount + b.ElementCount;
    }

    public override Linear Load(TensorSet weights, string module, float[]? bias)
    {
        var (a, b) = Factors(weights, module);
        var baseLayer = Base(weights, module).Load(weights, module, bias);
        return new CompensatedLinear(baseLayer, new LowRankLinear((int)a.Shape[1], (int)b.Shape[0], (int)a.Shape[0], b.ToFloatArray(), a.ToFloatArray()));
    }

    /// <summary>Base + B·A [out, in]: the one matrix the module computes with (the dense safetensors export writes it).</summary>
    public override Func<float[]> Multiplied(TensorSet weights, string module)
    {
        var baseRepresentation = Base(weights, module);
        var (a, b) = Factors(weights, module);
        var (rows, columns) = baseRepresentation.Shape(weights, module);
        return () =>
        {
            var w = LayerRepresentations.Dequantize(baseRepresentation, weights, module, a.File.Path);
            var correction = LowRankRepresentation.Multiply(b.ToFloatArray(), a.ToFloatArray(), rows, (int)a.Shape[0], columns);
            System.Numerics.Tensors.TensorPrimitives.Add(w, correction, w);
            return w;
        };
    }

    /// <summary>A [rank, in] and B [out, rank], checked: float matrices of one rank, matching the base's [out, in].</summary>
    public (StoredTensor A, StoredTensor B) Factors(TensorSet weights, string module) => Factors(weights, module, Base(weights, module).Shape(weights, module));

    private static (StoredTensor A, StoredTensor B) Factors(TensorSet weights, string module, (int Out, int In) shape)
    {
        var a = weights.Get(module + ASuffix);
        var b = weights.Get(module + BSuffix);
        foreach (var t in new[] { a, b })
            if (t.Type is not (TensorType.F16 or TensorType.BF16 or TensorType.F32) || t.Shape.Length != 2)
                throw ShrinkException.InFile(t.File.Path, $"tensor '{t.Name}' is {t.Type} [{string.Join(", ", t.Shape)}], expected an F16, BF16 or F32 matrix");
        long rank = a.Shape[0];
        if (rank < 1 || a.Shape[1] != shape.In || b.Shape[0] != shape.Out || b.Shape[1] != rank)
            throw ShrinkException.InFile(a.File.Path, $"module '{module}' [{shape.Out}, {shape.In}]: lora_A is [{string.Join(", ", a.Shape)}] and lora_B [{string.Join(", ", b.Shape)}], " +
                "expected [rank, in] and [out, rank]");
        return (a, b);
    }
}

/// <summary>
/// A compressed layer (<see cref="Base"/>) with the low-rank compensation of its error, B·A ≈ W − Ŵ (<see cref="LowRankFactors"/>:
/// B = U [out, rank], A = V [rank, in]), stored as <see cref="StoredType"/>.
/// </summary>
public sealed record CompensatedLayer(CompressedLayer Base, LowRankFactors Factors, TensorType StoredType) : CompressedLayer(Base.Layer, Base.Role, Base.Bias)
{
    public override LayerRepresentation Representation => CompensatedRepresentation.Instance;
    public override int Rows => Base.Rows;
    public override int Columns => Base.Columns;

    /// <summary>The factors as a reader of the stored tensors sees them (rounded to <see cref="StoredType"/>).</summary>
    private float[] Stored(float[] values) => TensorEncoding.Round(StoredType, values);

    public override Linear Build() => new CompensatedLinear(Base.Build(), new LowRankLinear(Columns, Rows, Factors.Rank, Stored(Factors.U), Stored(Factors.V)));

    /// <summary>The base's bits and the factors' rank·(out + in) values.</summary>
    public override double StoredBits => Base.StoredBits + 8.0 * TensorTypes.ByteCount(StoredType, (long)Factors.Rank * (Rows + Columns));

    public override float[] Dequantize()
    {
        var w = (float[])Base.Dequantize().Clone();
        var correction = LowRankRepresentation.Multiply(Stored(Factors.U), Stored(Factors.V), Rows, Factors.Rank, Columns);
        System.Numerics.Tensors.TensorPrimitives.Add(w, correction, w);
        return w;
    }

    protected override string Scheme => $"{Base.Describe()} + EoRA r={Factors.Rank} {StoredType}";

    public override IEnumerable<SafetensorsWriter.Entry> Tensors(string module) => Base.Tensors(module).Concat(
    [
        Entries.Encoded(module + CompensatedRepresentation.ASuffix, StoredType, Factors.V, Factors.Rank, Columns),
        Entries.Encoded(module + CompensatedRepresentation.BSuffix, StoredType, Factors.U, Rows, Factors.Rank),
    ]);
}
