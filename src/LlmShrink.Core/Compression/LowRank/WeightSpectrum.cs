using LlmShrink.LinearAlgebra;

namespace LlmShrink.Compression.LowRank;

/// <summary>
/// The SVD of W·T (<see cref="InputTransform"/>) of one weight [Rows, Columns], kept so that a rank can be chosen from its
/// singular values before the factors are formed. Truncating to rank r keeps W′ = U_r·Σ_r·V_rᵀ·T⁻¹, whose error in the
/// transformed coordinates is exactly the dropped energy (Eckart–Young): ‖(W − W′)·T‖_F² = Σ_{i ≥ r} σᵢ².
/// </summary>
public sealed class WeightSpectrum
{
    private readonly ThinSvd _svd;
    private readonly InputTransform _transform;
    private readonly double[] _tailEnergy; // _tailEnergy[r] = Σ_{i ≥ r} σᵢ²

    public int Rows => _svd.Rows;
    public int Columns => _svd.Columns;
    /// <summary>σ of W·T, descending.</summary>
    public IReadOnlyList<double> SingularValues => _svd.S;
    /// <summary>‖W·T‖_F² = Σ σᵢ².</summary>
    public double Energy => _tailEnergy[0];

    private WeightSpectrum(ThinSvd svd, InputTransform transform)
    {
        _svd = svd;
        _transform = transform;
        _tailEnergy = new double[svd.S.Length + 1];
        for (int i = svd.S.Length - 1; i >= 0; i--) _tailEnergy[i] = _tailEnergy[i + 1] + svd.S[i] * svd.S[i];
    }

    public static WeightSpectrum Of(float[] w, int rows, int columns, InputTransform transform, int threads = 0)
    {
        if (w.Length != (long)rows * columns) throw new ArgumentException($"{w.Length} weights are not {rows}×{columns}", nameof(w));
        return new WeightSpectrum(Svd.Decompose(transform.Apply(w, rows), rows, columns, threads), transform);
    }

    /// <summary>Σ_{i ≥ rank} σᵢ²: what truncating to <paramref name="rank"/> loses, ‖(W − W′)·T‖_F².</summary>
    public double TruncationLoss(int rank) => _tailEnergy[Math.Clamp(rank, 0, _svd.S.Length)];

    /// <summary>
    /// The factors of rank <paramref name="rank"/>, the singular values split evenly between them (U_r·Σ_r^½ and Σ_r^½·V_rᵀ·T⁻¹,
    /// as SVD-LLM stores them): balanced factors keep both within the range of a 16-bit float.
    /// </summary>
    public LowRankFactors Truncate(int rank)
    {
        int k = _svd.S.Length;
        if (rank < 1 || rank > k) throw new ArgumentOutOfRangeException(nameof(rank), $"rank {rank} is outside 1..{k}");
        int m = Rows, n = Columns;
        var u = new float[(long)m * rank];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < rank; j++) u[i * rank + j] = (float)(_svd.U[i * k + j] * Math.Sqrt(_svd.S[j]));
        var v = new double[(long)rank * n];
        for (int j = 0; j < rank; j++)
        {
            double root = Math.Sqrt(_svd.S[j]);
            for (int c = 0; c < n; c++) v[j * n + c] = _svd.Vt[j * n + c] * root;
        }
        _transform.SolveRows(v, rank);
        return new LowRankFactors(m, n, u, Array.ConvertAll(v, x => (float)x));
    }
}
