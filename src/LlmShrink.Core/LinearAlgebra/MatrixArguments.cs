using System.Numerics;

namespace LlmShrink.LinearAlgebra;

/// <summary>The argument checks shared by the public decompositions: positive sizes, a matching length, finite values.</summary>
static class MatrixArguments
{
    public static void Check<T>(ReadOnlySpan<T> a, int rows, int columns, int threads, string what) where T : IFloatingPointIeee754<T>
    {
        if (rows <= 0 || columns <= 0)
            throw new ArgumentException($"{what}: the matrix must have positive sizes, not {rows}×{columns}");
        if (a.Length != (long)rows * columns)
            throw new ArgumentException($"{what}: the matrix has {a.Length} values, not {rows}×{columns} = {(long)rows * columns}");
        if (threads < 0) throw new ArgumentException($"{what}: threads must be 0 (all cores) or positive, not {threads}");
        for (int i = 0; i < a.Length; i++)
            if (!T.IsFinite(a[i]))
                throw new ArgumentException($"{what}: element [{i / columns}, {i % columns}] is {a[i]}; the matrix must be finite");
    }

    /// <summary>Threads a call may use: <paramref name="threads"/>, or every core for 0.</summary>
    public static int Threads(int threads) => threads == 0 ? Environment.ProcessorCount : threads;
}
