using LlmShrink.Compression.LowRank;
using LlmShrink.Formats;
using LlmShrink.Formats.Safetensors;
using LlmShrink.Model;

namespace LlmShrink.Representations;

/// <summary>
/// A weight stored as two factors, W ≈ U·V: <c>lowrank_u</c> [out, rank] and <c>lowrank_v</c> [rank, in], each F16, BF16 or
/// F32 (docs/FORMAT.md). It runs as two thin matmuls (<see cref="LowRankLinear"/>); exports that need a plain matrix
/// (safetensors, GGUF) multiply it back (<see cref="Multiplied"/>).
/// </summary>
public sealed class LowRankRepresentation : LayerRepresentation
{
    public static readonly LowRankRepresentation Instance = new();
    public override string Name => "low-rank";
    public override IReadOnlyList<string> Suffixes { get; } = [".lowrank_u", ".lowrank_v"];

    public override bool Detect(TensorSet weights, string module) => weights.Contains(module + ".lowrank_u");

    public override (int Out, int In) Shape(TensorSet weights, string module)
    {
        var (u, v) = Factors(weights, module);
        return ((int)u.Shape[0], (int)v.Shape[1]);
    }

    /// <summary>The factors' element width (16 for F16/BF16 factors).</summary>
    public override int Bits(TensorSet weights, string module) => (int)TensorTypes.ByteCount(Factors(weights, module).U.Type, 1) * 8;

    /// <summary>The values stored: rank·(out + in).</summary>
    public override long Parameters(TensorSet weights, string module)
    {
        var (u, v) = Factors(weights, module);
        return u.ElementCount + v.ElementCount;
    }

    public override Linear Load(TensorSet weights, string module, float[]? bias)
    {
        var (u, v) = Factors(weights, module);
        return new LowRankLinear((int)v.Shape[1], (int)u.Shape[0], (int)u.Shape[1], u.ToFloatArray(), v.ToFloatArray(), bias);
    }

    /// <summary>U·V [out, in], one output row at a time (row r = Σ_k U[r, k]·V[k, ·]).</summary>
    public override float[] Multiplied(TensorSet weights, string module)
    {
        var (u, v) = Factors(weights, module);
        return Multiply(u.ToFloatArray(), v.ToFloatArray(), (int)u.Shape[0], (int)u.Shape[1], (int)v.Shape[1]);
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

    /// <summary>The two factor tensors, checked: 2-D, one float type, inner dimensions equal.</summary>
    private static (StoredTensor U, StoredTensor V) Factors(TensorSet weights, string module)
    {
        var u = weights.Get(module + ".lowrank_u");
        var v = weights.Get(module + ".lowrank_v");
        foreach (var t in new[] { u, v })
            if (t.Type is not (TensorType.F16 or TensorType.BF16 or TensorType.F32) || t.Shape.Length != 2 || t.Shape[0] is <= 0 or > int.MaxValue || t.Shape[1] is <= 0 or > int.MaxValue)
                throw ShrinkException.InFile(t.File.Path, $"tensor '{t.Name}' is {t.Type} [{string.Join(", ", t.Shape)}], expected an F16, BF16 or F32 matrix");
        if (u.Shape[1] != v.Shape[0])
            throw ShrinkException.InFile(u.File.Path, $"module '{module}': lowrank_u is [{string.Join(", ", u.Shape)}] but lowrank_v is [{string.Join(", ", v.Shape)}]; their ranks differ");
        return (u, v);
    }
}

/// <summary>A layer a low-rank method factored (<see cref="LowRankFactors"/>), its factors stored as <see cref="StoredType"/>.</summary>
public sealed record LowRankLayer(int Layer, LinearRole Role, LowRankFactors Factors, TensorType StoredType, float[]? Bias) : CompressedLayer(Layer, Role, Bias)
{
    public override LayerRepresentation Representation => LowRankRepresentation.Instance;
    public override int Rows => Factors.Rows;
    public override int Columns => Factors.Columns;

    /// <summary>The factors as a reader of the stored tensors sees them (rounded to <see cref="StoredType"/>).</summary>
    private float[] Stored(float[] values) => StoredType == TensorType.F32 ? values : TensorEncoding.Round(StoredType, values);

    public override Linear Build() => new LowRankLinear(Columns, Rows, Factors.Rank, Stored(Factors.U), Stored(Factors.V), Bias);

    public override double StoredBits => 8.0 * TensorTypes.ByteCount(StoredType, (long)Factors.Rank * (Rows + Columns));

    public override float[] Dequantize() => LowRankRepresentation.Multiply(Stored(Factors.U), Stored(Factors.V), Rows, Factors.Rank, Columns);

    protected override string Scheme => $"low-rank r={Factors.Rank} {StoredType}";

    public override IEnumerable<SafetensorsWriter.Entry> Tensors(string module)
    {
        yield return Entries.Encoded(module + ".lowrank_u", StoredType, Factors.U, Rows, Factors.Rank);
        yield return Entries.Encoded(module + ".lowrank_v", StoredType, Factors.V, Factors.Rank, Columns);
    }
}
