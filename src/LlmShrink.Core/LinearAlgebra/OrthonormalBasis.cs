using System.Numerics.Tensors;

namespace LlmShrink.LinearAlgebra;

/// <summary>
/// Completes a set of orthonormal rows: a singular vector whose singular value is zero (or rounding noise) is not
/// determined by A, but V must still have orthonormal columns, so such rows are filled with directions orthogonal to
/// all the others.
/// </summary>
static class OrthonormalBasis
{
    /// <summary>
    /// Rows i of <paramref name="basis"/> [count, length] with <paramref name="unset"/>[i] are replaced by unit vectors
    /// orthogonal to every other row: a fixed pseudo-random vector, orthogonalized twice against the rest (classical
    /// Gram–Schmidt with re-orthogonalization, "twice is enough": Giraud et al. 2005).
    /// </summary>
    public static void Complete(double[] basis, int count, int length, ReadOnlySpan<bool> unset)
    {
        var random = new Random(count * 7919 + length);
        for (int i = 0; i < count; i++)
        {
            if (!unset[i]) continue;
            var row = basis.AsSpan(i * length, length);
            while (true)
            {
                for (int j = 0; j < length; j++) row[j] = random.NextDouble() - 0.5;
                for (int pass = 0; pass < 2; pass++)
                    for (int o = 0; o < count; o++)
                    {
                        if (o == i || (o > i && unset[o])) continue; // later unset rows are not filled yet
                        var other = basis.AsSpan(o * length, length);
                        TensorPrimitives.MultiplyAdd(other, -TensorPrimitives.Dot<double>(row, other), row, row);
                    }
                double norm = TensorPrimitives.Norm<double>(row);
                if (norm > 1e-3)
                {
                    TensorPrimitives.Multiply(row, 1 / norm, row);
                    break;
                }
            }
        }
    }
}
