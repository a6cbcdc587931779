namespace LlmShrink.LinearAlgebra;

/// <summary>
/// A thin singular value decomposition A = U·diag(S)·Vᵀ of a <see cref="Rows"/>×<see cref="Columns"/> matrix, with
/// k = min(Rows, Columns) = <see cref="Rank"/> triplets: <see cref="S"/> descending and non-negative, <see cref="U"/>
/// [Rows, k] and <see cref="Vt"/> [k, Columns], both row-major with orthonormal columns of U and rows of Vt.
/// </summary>
public sealed record ThinSvd(int Rows, int Columns, double[] S, double[] U, double[] Vt)
{
    public int Rank => S.Length;
}
