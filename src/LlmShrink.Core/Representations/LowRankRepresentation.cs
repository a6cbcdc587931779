using LlmShrink.Compression.LowRank;
using LlmShrink.Formats;
using LlmShrink.Formats.Safetensors;
using LlmShrink.Model;

namespace LlmShrink.Representations;

/// <summary>
/// A weight stored as two factors, W ≈ U·V with U [out, rank] and V [rank, in]. Each factor is a module of its own,
/// <c>&lt;module&gt;.lowrank_u</c> and <c>&lt;module&gt;.lowrank_v</c>, in any other registered representation: a plain
/// <c>.weight</c> (F16/BF16/F32), or GPTQ-packed when the method quantized the factors (docs/FORMAT.md). It runs as two thin
/// matmuls, each on its factor's own kernel (<see cref="LowRankLinear"/>); exports that need a plain matrix (safetensors,
/// GGUF) multiply it back (<see cref="Multiplied"/>).
/// </summary>
public sealed class LowRankRepresentation : LayerRepresentation
{
    public static readonly LowRankRepresentation Instance = new();
    public const string U = ".lowrank_u", V = ".lowrank_v";

    public override string Name => "low-rank";

    /// <summary>Every other representation's suffixes under each factor (e.g. <c>.lowrank_u.weight</c>, <c>.lowrank_v.qweight</c>).</summary>
    public override IReadOnlyList<string> Suffixes => _suffixes.Value;
    private readonly Lazy<IReadOnlyList<string>> _suffixes = new(() =>
        [.. new[] { U, V }.SelectMany(factor => LayerRepresentations.All.Where(r => r is not LowRankRepresentation).SelectMany(r => r.Suffixes).Distinct().Select(s => factor + s))]);

    public override bool Detect(TensorSet weights, string module) => Factor(weights, module + U) is not null;

    public override (int Out, int In) Shape(TensorSet weights, string module)
    {
        var (u, v) = Factors(weights, module);
        return (u.Shape.Out, v.Shape.In);
    }

    /// <summary>The code width of the factors (16 for F16/BF16 factors, 4 for 4-bit ones).</summary>
    public override int Bits(TensorSet weights, string module) => Factors(weights, module).V.Representation.Bits(weights, module + V);

    /// <summary>The values stored: rank·(out + in).</summary>
    public override long Parameters(TensorSet weights, string module)
    {
        var (u, v) = Factors(weights, module);
        return u.Representation.Parameters(weights, module + U) + v.Representation.Parameters(weights, module + V);
    }

    public override Linear Load(TensorSet weights, string module, float[]? bias)
    {
        var (u, v) = Factors(weights, module);
        return new LowRankLinear(v.Representation.Load(weights, module + V, null), u.Representation.Load(weights, module + U, null), bias);
    }

    /// <summary>U·V [out, in], one output row at a time (row r = Σ_k U[r, k]·V[k, ·]), from the factors as the model computes them.</summary>
    public override Func<float[]> Multiplied(TensorSet weights, string module)
    {
        var (u, v) = Factors(weights, module);
        string source = weights.Files.FirstOrDefault()?.Path ?? module;
        return () => Multiply(LayerRepresentations.Dequantize(weights, module + U, source), LayerRepresentations.Dequantize(weights, module + V, source),
            u.Shape.Out, u.Shape.In, v.Shape.In);
    }

    internal static float[] Multiply(float[] u, float[] v, int rows, int rank, int columns)
    {
        var w = new float[(long)rows * columns];
        Parallel.For(0, rows, r =>
        {
            var row = w.AsSpan(r * columns, columns);
            for (int k = 0; k < rank; k++)
                System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(v.AsSpan(k * columns, columns), u[r * rank + k], row, row);
        });
        return w;
    }

    private static (LayerRepresentation Representation, (int Out, int In) Shape)? Factor(TensorSet weights, string factor) =>
        LayerRepresentations.All.Where(r => r is not LowRankRepresentation).FirstOrDefault(r => r.Detect(weights, factor)) is { } representation
            ? (representation, representation.Shape(weights, factor)) : null;

    /// <summary>Both factors, found and checked: inner dimensions equal.</summary>
    private static ((LayerRepresentation Representation, (int Out, int In) Shape) U, (LayerRepresentation Representation, (int Out, int In) Shape) V) Factors(TensorSet weights, string module)
    {
        string source = weights.Files.FirstOrDefault()?.Path ?? module;
        var u = Factor(weights, module + U) ?? throw ShrinkException.InFile(source, $"module '{module}': factor '{module + U}' has no weight tensors");
        var v = Factor(weights, module + V) ?? throw ShrinkException.InFile(source, $"module '{module}': factor '{module + V}' has no weight tensors");
        if (u.Shape.In != v.Shape.Out)
            throw ShrinkException.InFile(source, $"module '{module}': lowrank_u is [{u.Shape.Out}, {u.Shape.In}] but lowrank_v is [{v.Shape.Out}, {v.Shape.In}]; their ranks differ");
        return (u, v);
    }
}

/// <summary>
/// A layer a low-rank method factored: <see cref="UFactor"/> [Rows, rank] and <see cref="VFactor"/> [rank, Columns] are
/// compressed layers of their own (dense in a float type, or quantized), written under the module's factor names.
/// </summary>
public sealed record LowRankLayer(int Layer, LinearRole Role, CompressedLayer UFactor, CompressedLayer VFactor, float[]? Bias) : CompressedLayer(Layer, Role, Bias)
{
    public override LayerRepresentation Representation => LowRankRepresentation.Instance;
    public override int Rows => UFactor.Rows;
    public override int Columns => VFactor.Columns;
    public int Rank => VFactor.Rows;

    /// <summary>Float factors stored as <paramref name="type"/> (F16, BF16 or F32).</summary>
    public static LowRankLayer Dense(int layer, LinearRole role, LowRankFactors factors, TensorType type, float[]? bias) =>
        new(layer, role, new DenseLayer(layer, role, factors.U, factors.Rows, factors.Rank, null) { StoredType = type },
            new DenseLayer(layer, role, factors.V, factors.Rank, factors.Columns, null) { StoredType = type }, bias);

    public override Linear Build() => new LowRankLinear(VFactor.Build(), UFactor.Build(), Bias);

    public override double StoredBits => UFactor.StoredBits + VFactor.StoredBits;

    public override float[] Dequantize() => LowRankRepresentation.Multiply(UFactor.Dequantize(), VFactor.Dequantize(), Rows, Rank, Columns);

    /// <summary>"low-rank r=102 F16", or with quantized factors "low-rank r=96, factors 4-bit sym g32".</summary>
    protected override string Scheme => VFactor is DenseLayer dense ? $"low-rank r={Rank} {dense.StoredType}" : $"low-rank r={Rank}, factors {VFactor.Describe()}";

    public override IEnumerable<SafetensorsWriter.Entry> Tensors(string module) =>
        UFactor.Tensors(module + LowRankRepresentation.U).Concat(VFactor.Tensors(module + LowRankRepresentation.V));
}
