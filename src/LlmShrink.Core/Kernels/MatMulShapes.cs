namespace LlmShrink.Kernels;

/// <summary>The argument check every y[n, out] = x[n, in]·Wᵀ kernel starts with.</summary>
internal static class MatMulShapes
{
    /// <summary>Throws unless x holds n rows of <paramref name="inDim"/> floats and y has room for n rows of <paramref name="outDim"/>.</summary>
    public static void Check(int xLength, int yLength, int n, int inDim, int outDim)
    {
        if (xLength < (long)n * inDim) throw new ArgumentException($"x has {xLength} floats, needs {n}×{inDim}", "x");
        if (yLength < (long)n * outDim) throw new ArgumentException($"y has {yLength} floats, needs {n}×{outDim}", "y");
    }
}
