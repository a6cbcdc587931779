namespace LlmShrink.Kernels;

/// <summary>
/// Symmetric int8 quantization of an activation row in blocks, so that a quantized weight can be multiplied with
/// integer dot products (the Q8_0 / Q8_K activations of llama.cpp, and the per-token scale of W8A8,
/// arXiv:2211.10438): per block d = max|x| / 127 and q = round(x / d) ∈ [−127, 127], so x ≈ d·q.
/// </summary>
public static class QuantizeActivations
{
    /// <summary>
    /// Quantizes <c>x</c> (a whole number of blocks of <paramref name="blockSize"/>) into <paramref name="q"/>, one
    /// scale per block in <paramref name="scales"/>; if <paramref name="sums32"/> is not empty it receives Σq over
    /// every 32 consecutive elements (the K-quant minimum terms need them: Σ(d·s·w − m)·q = d·s·Σw·q − m·Σq).
    /// </summary>
    public static void Quantize(ReadOnlySpan<float> x, int blockSize, Span<sbyte> q, Span<float> scales, Span<int> sums32)
    {
        if (blockSize <= 0 || x.Length % blockSize != 0) throw new ArgumentException($"{x.Length} is not a whole number of blocks of {blockSize}", nameof(blockSize));
        int blocks = x.Length / blockSize;
        if (q.Length < x.Length || scales.Length < blocks) throw new ArgumentException("output spans are too short");
        for (int b = 0; b < blocks; b++)
        {
            var xb = x.Slice(b * blockSize, blockSize);
            float amax = System.Numerics.Tensors.TensorPrimitives.MaxMagnitude(xb);
            amax = Math.Abs(amax);
            float d = amax / 127f;
            float inverse = d == 0 ? 0 : 1f / d;
            scales[b] = d;
            var qb = q.Slice(b * blockSize, blockSize);
            for (int i = 0; i < xb.Length; i++) qb[i] = (sbyte)MathF.Round(xb[i] * inverse, MidpointRounding.AwayFromZero);
        }
        if (sums32.IsEmpty) return;
        if (x.Length % 32 != 0 || sums32.Length < x.Length / 32) throw new ArgumentException("sums32 needs one entry per 32 elements", nameof(sums32));
        for (int s = 0; s < x.Length / 32; s++)
        {
            int sum = 0;
            for (int i = 0; i < 32; i++) sum += q[32 * s + i];
            sums32[s] = sum;
        }
    }
}
