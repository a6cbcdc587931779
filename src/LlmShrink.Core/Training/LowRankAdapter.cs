using System.Buffers;
using System.Numerics.Tensors;
using LlmShrink.Formats;
using LlmShrink.Kernels;
using LlmShrink.Representations;

namespace LlmShrink.Training;

/// <summary>
/// A low-rank term s·B·A added to a linear layer [out, in]: A [rank, in], B [out, rank], both trainable
/// <see cref="Parameter"/>s. Two uses:
/// <list type="bullet">
/// <item>LoRA (Hu et al. 2021, Eq. 3: h = W₀x + ΔWx = W₀x + B·A·x, scaled by α/r, §4.1): beside a frozen weight W₀,
/// A initialized small and random, B zero, so training starts from the unchanged model (<see cref="Initialize"/>).</item>
/// <item>A low-rank student's factored layer W = U·V (SVD-LLM and the other low-rank methods,
/// <see cref="LowRankRepresentation"/>): B = U, A = V, s = 1, and no base weight (<see cref="Parameter.Factored"/>). Training
/// both factors by distillation is SVD-LLM's "parameter update" step (Wang et al. 2024, §3.3), done with the teacher's logits.</item>
/// </list>
/// The term runs as two chained linears, t = s·(x·Aᵀ) [n, rank] then t·Bᵀ (<see cref="Forward"/>): n·rank·(in + out)
/// multiply-adds instead of n·in·out, and no gradient of the [out, in] product is ever formed (<see cref="Backward"/>).
/// On a pruned layer the term goes through the mask instead (<see cref="Masked"/>, <see cref="BackwardFromProduct"/>).
/// </summary>
public sealed class LowRankAdapter
{
    /// <summary>[rank, in].</summary>
    public Parameter A { get; }
    /// <summary>[out, rank].</summary>
    public Parameter B { get; }
    /// <summary>s: α/r for LoRA, 1 for a factored layer.</summary>
    public float Scale { get; }

    /// <summary>
    /// The type the factors are written in: a low-rank student's, as read (F16 for the presets); F32 for LoRA, whose
    /// trained update is written unrounded.
    /// </summary>
    public TensorType StoredType { get; init; } = TensorType.F32;

    public int Rank => A.Rows;
    public int Rows => B.Rows;
    public int Columns => A.Columns;
    public IReadOnlyList<Parameter> Parameters => [A, B];

    public LowRankAdapter(Parameter a, Parameter b, float scale)
    {
        if (a.Shape.Length != 2 || b.Shape.Length != 2 || a.Rows != b.Columns)
            throw new ArgumentException($"{a.Name} [{string.Join(", ", a.Shape)}] and {b.Name} [{string.Join(", ", b.Shape)}] are not [rank, in] and [out, rank]");
        A = a;
        B = b;
        Scale = scale;
    }

    /// <summary>
    /// LoRA's start for module <paramref name="module"/> [rows, columns]: B = 0, and A drawn as PEFT's
    /// reset_lora_parameters draws it, torch's kaiming_uniform_ with a = √5 — gain √(2 / (1 + a²)) = 1/√3, bound
    /// gain·√(3 / fan_in) = 1/√in, A ~ U(−1/√in, 1/√in). Scale α/r (Hu et al. 2021, §4.1). The factors are named as PEFT
    /// and the compensated representation name them (<c>&lt;module&gt;.lora_A.weight</c>, <c>.lora_B.weight</c>).
    /// </summary>
    public static LowRankAdapter Initialize(string module, int rows, int columns, int rank, float alpha, Random random)
    {
        float bound = 1 / MathF.Sqrt(columns);
        var a = new float[rank * columns];
        for (int i = 0; i < a.Length; i++) a[i] = bound * (2 * random.NextSingle() - 1);
        return new LowRankAdapter(new Parameter(module + CompensatedRepresentation.ASuffix, a, rank, columns),
            new Parameter(module + CompensatedRepresentation.BSuffix, new float[rows * rank], rows, rank), alpha / rank);
    }

    /// <summary>Adds s·(x·Aᵀ)·Bᵀ into <paramref name="y"/> [n, out].</summary>
    public void Forward(ReadOnlySpan<float> x, Span<float> y, int n)
    {
        var pool = ArrayPool<float>.Shared;
        float[] t = pool.Rent(n * Rank), product = pool.Rent(n * Rows);
        try
        {
            Inner(x, t, n);
            LinearOp.Forward(t, B, null, product, n);
            TensorPrimitives.Add(y[..(n * Rows)], product.AsSpan(0, n * Rows), y[..(n * Rows)]);
        }
        finally
        {
            pool.Return(t);
            pool.Return(product);
        }
    }

    /// <summary>
    /// The chain rule through <see cref="Forward"/>, t = s·(x·Aᵀ) recomputed rather than kept (n·rank floats per layer
    /// against a product of n·in·rank): dB += dYᵀ·t, dt = dY·B, then with dt scaled by s, dA += dtᵀ·x and dX += dt·A.
    /// </summary>
    public void Backward(ReadOnlySpan<float> dy, ReadOnlySpan<float> x, Span<float> dx, int n)
    {
        var pool = ArrayPool<float>.Shared;
        float[] t = pool.Rent(n * Rank), dt = pool.Rent(n * Rank);
        try
        {
            Inner(x, t, n);
            var dtSpan = dt.AsSpan(0, n * Rank);
            dtSpan.Clear();
            LinearOp.Backward(dy, t, B, null, dtSpan, n);
            TensorPrimitives.Multiply(dtSpan, Scale, dtSpan);
            LinearOp.Backward(dtSpan, x, A, null, dx, n);
        }
        finally
        {
            pool.Return(t);
            pool.Return(dt);
        }
    }

    /// <summary>t = s·(x·Aᵀ) [n, rank].</summary>
    private void Inner(ReadOnlySpan<float> x, float[] t, int n)
    {
        var span = t.AsSpan(0, n * Rank);
        LinearOp.Forward(x, A, null, span, n);
        TensorPrimitives.Multiply(span, Scale, span);
    }

    /// <summary>
    /// W + s·B·A with the update zeroed wherever <paramref name="mask"/> is 0 (when given): the weight a pruned layer with
    /// this adapter computes with, in training and once merged, so the merge keeps every pruned zero and writes exactly the
    /// function that was trained. W itself is not modified.
    /// </summary>
    public float[] Masked(float[] weight, byte[]? mask)
    {
        var merged = LowRankRepresentation.Multiply(B.Value, A.Value, Rows, Rank, Columns);
        TensorPrimitives.Multiply(merged, Scale, merged);
        if (mask is not null)
            for (int i = 0; i < merged.Length; i++) if (mask[i] == 0) merged[i] = 0;
        TensorPrimitives.Add(merged, weight, merged);
        return merged;
    }

    /// <summary>
    /// The gradients of A and B from G = ∂L/∂(s·B·A) [out, in], already masked where the layer is pruned (the weight
    /// gradient of <see cref="Masked"/>): dB += s·G·Aᵀ, dA += s·Bᵀ·G = s·(Gᵀ·B)ᵀ. Two products of out·in·rank, on the
    /// inference kernel (y = x·Wᵀ): G·Aᵀ directly, Bᵀ·G as Bᵀ times (Gᵀ)ᵀ.
    /// </summary>
    public unsafe void BackwardFromProduct(ReadOnlySpan<float> g)
    {
        int rows = Rows, columns = Columns, rank = Rank;
        var pool = ArrayPool<float>.Shared;
        float[] product = pool.Rent(Math.Max(rows, columns) * rank), bt = pool.Rent(rank * rows), gt = pool.Rent(rows * columns);
        try
        {
            var dB = product.AsSpan(0, rows * rank);
            fixed (float* a = A.Value) MatMul.Multiply(g[..(rows * columns)], a, dB, rows, columns, rank);
            TensorPrimitives.MultiplyAdd(dB, Scale, B.Grad, B.Grad);
            Transpose.Apply(B.Value, rows, rank, bt);
            Transpose.Apply(g, rows, columns, gt);
            var dA = product.AsSpan(0, rank * columns);
            fixed (float* gtp = gt) MatMul.Multiply(bt.AsSpan(0, rank * rows), gtp, dA, rank, rows, columns);
            TensorPrimitives.MultiplyAdd(dA, Scale, A.Grad, A.Grad);
        }
        finally
        {
            pool.Return(product);
            pool.Return(bt);
            pool.Return(gt);
        }
    }
}
