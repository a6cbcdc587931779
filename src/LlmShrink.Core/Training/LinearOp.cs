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
/// <para>All three products run on the inference kernel <see cref="MatMul.Multiply"/> (y = x·Wᵀ, multi-threaded on the
/// shared <see cref="WorkerPool"/>): dX = dY·(Wᵀ)ᵀ with Wᵀ transposed once, dW = (dYᵀ)·(Xᵀ)ᵀ with dY and X transposed;
/// a transpose costs O(n·in + n·out + in·out), the product O(n·in·out).</para>
/// </summary>
public static unsafe class LinearOp
{
    public static void Forward(ReadOnlySpan<float> x, Parameter weight, Parameter? bias, Span<float> y, int n)
    {
        int outDim = weight.Rows, inDim = weight.Columns;
        fixed (float* w = Effective(weight)) MatMul.Multiply(x[..(n * inDim)], w, y[..(n * outDim)], n, inDim, outDim);
        if (bias is null) return;
        for (int i = 0; i < n; i++) TensorPrimitives.Add(y.Slice(i * outDim, outDim), bias.Value, y.Slice(i * outDim, outDim));
    }

    /// <summary>
    /// Adds dY·W into <paramref name="dx"/>, dYᵀ·X (masked) into the weight's gradient, Σ dY into the bias's.
    /// </summary>
    public static void Backward(ReadOnlySpan<float> dy, ReadOnlySpan<float> x, Parameter weight, Parameter? bias, Span<float> dx, int n)
    {
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
                TensorPrimitives.Add(weight.Grad, dw, weight.Grad);
            }
            if (bias is not null)
                for (int i = 0; i < n; i++) TensorPrimitives.Add(bias.Grad, dy.Slice(i * outDim, outDim), bias.Grad);
        }
        finally
        {
            pool.Return(a);
            pool.Return(b);
            pool.Return(c);
        }
    }

    /// <summary>The weight the product uses: the value itself, or its fake-quantized Ŵ.</summary>
    private static float[] Effective(Parameter weight) => weight.Quantization?.Forward(weight.Value) ?? weight.Value;
}
