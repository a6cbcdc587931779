using System.Buffers;
using System.Numerics.Tensors;
using LlmShrink.Kernels;

namespace LlmShrink.Training;

/// <summary>
/// A linear layer Y[n, out] = X[n, in]·Wᵀ (+ b), W stored [out, in]. Backward:
/// dX = dY·W, dW = dYᵀ·X, db = Σ_rows dY. A masked W (<see cref="Parameter.Mask"/>) computes with W ⊙ M, whose
/// values are already zero under the mask, and gets dW = (dYᵀ·X) ⊙ M. A fake-quantized W
/// (<see cref="Parameter.Quantization"/>) computes with its grid's Ŵ, and dŴ = dYᵀ·X goes to the grid's backward
/// (<see cref="FakeQuantization.Backward"/>), which routes it to the latent weight, the scales and the zero points; Ŵ is
/// recomputed in the backward rather than kept (a pass over the weights, against the n times longer products).
/// <para>A frozen W (<see cref="Parameter.Frozen"/>) gets no dW: the product is skipped. An adapter
/// (<see cref="Parameter.Adapter"/>, LoRA or a factored layer's factors) adds s·B·A: on a dense or factored W as two chained
/// linears (<see cref="LowRankAdapter.Forward"/>); on a masked W inside the weight, which computes with
/// (W + s·B·A) ⊙ M, whose dW — masked — goes to the factors (<see cref="LowRankAdapter.BackwardFromProduct"/>).</para>
/// <para>All three products run on the inference kernel <see cref="MatMul.Multiply"/> (y = x·Wᵀ, multi-threaded on the
/// shared <see cref="WorkerPool"/>): dX = dY·(Wᵀ)ᵀ with Wᵀ transposed once, dW = (dYᵀ)·(Xᵀ)ᵀ with dY and X transposed;
/// a transpose costs O(n·in + n·out + in·out), the product O(n·in·out).</para>
/// </summary>
public static unsafe class LinearOp
{
    public static void Forward(ReadOnlySpan<float> x, Parameter weight, Parameter? bias, Span<float> y, int n)
    {
        int outDim = weight.Rows, inDim = weight.Columns;
        if (weight.HasValue)
            fixed (float* w = Effective(weight)) MatMul.Multiply(x[..(n * inDim)], w, y[..(n * outDim)], n, inDim, outDim);
        else y[..(n * outDim)].Clear();
        if (weight.Adapter is { } adapter && !ThroughMask(weight)) adapter.Forward(x, y, n);
        if (bias is null) return;
        for (int i = 0; i < n; i++) TensorPrimitives.Add(y.Slice(i * outDim, outDim), bias.Value, y.Slice(i * outDim, outDim));
    }

    /// <summary>
    /// Adds dY·W into <paramref name="dx"/>, dYᵀ·X (masked) into the weight's gradient (or its adapter's, or none when
    /// frozen), Σ dY into the bias's.
    /// </summary>
    public static void Backward(ReadOnlySpan<float> dy, ReadOnlySpan<float> x, Parameter weight, Parameter? bias, Span<float> dx, int n)
    {
        if (weight.Adapter is { } adapter && !ThroughMask(weight)) adapter.Backward(dy, x, dx, n);
        if (!weight.HasValue)
        {
            AddBiasGradient(dy, bias, weight.Rows, n);
            return;
        }
        int outDim = weight.Rows, inDim = weight.Columns;
        var pool = ArrayPool<float>.Shared;
        // a: dYᵀ; b: Wᵀ, then Xᵀ; c: the product before it is added.
        float[] a = pool.Rent(n * outDim), b = pool.Rent(Math.Max(n, outDim) * inDim), c = pool.Rent(Math.Max(n, outDim) * inDim);
        try
        {
            // dX[n, in] = dY[n, out]·W[out, in] = dY·(Wᵀ)ᵀ: Wᵀ is the [in, out] matrix MatMul wants.
            Transpose.Apply(Effective(weight), outDim, inDim, b);
            fixed (float* wt = b) MatMul.Multiply(dy[..(n * outDim)], wt, c.AsSpan(0, n * inDim), n, outDim, inDim);
            TensorPrimitives.Add(dx[..(n * inDim)], c.AsSpan(0, n * inDim), dx[..(n * inDim)]);
            AddBiasGradient(dy, bias, outDim, n);
            if (weight.Frozen && !ThroughMask(weight)) return;
            // dW[out, in] = dYᵀ[out, n]·X[n, in] = dYᵀ·(Xᵀ)ᵀ.
            Transpose.Apply(dy, n, outDim, a);
            Transpose.Apply(x, n, inDim, b);
            fixed (float* xt = b) MatMul.Multiply(a.AsSpan(0, outDim * n), xt, c.AsSpan(0, outDim * inDim), outDim, n, inDim);
            var dw = c.AsSpan(0, outDim * inDim);
            if (weight.Quantization is { } quantization) quantization.Backward(c, weight.Value, weight.Grad);
            else
            {
                if (weight.Mask is { } mask)
                    for (int i = 0; i < dw.Length; i++) if (mask[i] == 0) dw[i] = 0;
                if (ThroughMask(weight)) weight.Adapter!.BackwardFromProduct(dw);
                else TensorPrimitives.Add(weight.Grad, dw, weight.Grad);
            }
        }
        finally
        {
            pool.Return(a);
            pool.Return(b);
            pool.Return(c);
        }
    }

    private static void AddBiasGradient(ReadOnlySpan<float> dy, Parameter? bias, int outDim, int n)
    {
        if (bias is null || bias.Frozen) return;
        for (int i = 0; i < n; i++) TensorPrimitives.Add(bias.Grad, dy.Slice(i * outDim, outDim), bias.Grad);
    }

    /// <summary>The weight the product uses: the value itself, its fake-quantized Ŵ, or (W + s·B·A) ⊙ M for a masked weight with an adapter.</summary>
    private static float[] Effective(Parameter weight) =>
        ThroughMask(weight) ? weight.Adapter!.Masked(weight.Value, weight.Mask) : weight.Quantization?.Forward(weight.Value) ?? weight.Value;

    /// <summary>
    /// A pruned weight's adapter trains through the mask: s·B·A is dense, and were it added beside W the layer would lose
    /// its zeros on merging; masked inside the weight, the merged layer is exactly the trained one.
    /// </summary>
    private static bool ThroughMask(Parameter weight) => weight.Adapter is not null && weight.Mask is not null;
}
