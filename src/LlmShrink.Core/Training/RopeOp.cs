using LlmShrink.Kernels;

namespace LlmShrink.Training;

/// <summary>
/// Rotary position embedding (Su et al. 2021) in the model's own convention (<see cref="Rope"/>: Hugging Face
/// rotate-half or interleaved pairs, any frequency scaling): each pair (a, b) of a head at position p is rotated by
/// φ = p·θ, y = R(φ)·x. R(φ) is orthogonal, so the backward is dx = R(φ)ᵀ·dy = R(−φ)·dy: the same rotation with sin negated.
/// Rows are tokens of sequences of <c>seqLen</c> positions each (row r is at position r mod seqLen).
/// </summary>
public static class RopeOp
{
    /// <param name="x">[rows, width], every row a whole number of heads, rotated in place.</param>
    /// <param name="cos">cos(p·θ_k) for p in [0, seqLen), k in [0, headDim/2): [seqLen, headDim/2]; <paramref name="sin"/> likewise.</param>
    public static void Forward(Rope rope, Span<float> x, int rows, int seqLen, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        int width = x.Length / rows, half = rope.HeadDim / 2;
        for (int r = 0; r < rows; r++)
        {
            int p = r % seqLen;
            rope.Rotate(x.Slice(r * width, width), cos.Slice(p * half, half), sin.Slice(p * half, half));
        }
    }

    /// <summary>Turns the gradient with respect to the rotated rows into the gradient with respect to the rows before rotation, in place.</summary>
    public static void Backward(Rope rope, Span<float> dx, int rows, int seqLen, ReadOnlySpan<float> cos, ReadOnlySpan<float> negativeSin) =>
        Forward(rope, dx, rows, seqLen, cos, negativeSin);

    /// <summary>The tables <see cref="Forward"/> and <see cref="Backward"/> take: cos, sin and −sin of p·θ_k for positions [0, seqLen).</summary>
    public static (float[] Cos, float[] Sin, float[] NegativeSin) Tables(Rope rope, int seqLen)
    {
        int half = rope.HeadDim / 2;
        float[] cos = new float[seqLen * half], sin = new float[seqLen * half];
        for (int p = 0; p < seqLen; p++) rope.Angles(p, cos.AsSpan(p * half, half), sin.AsSpan(p * half, half));
        return (cos, sin, sin.Select(s => -s).ToArray());
    }
}
