using LlmShrink.LinearAlgebra;

namespace LlmShrink.Compression.LowRank;

/// <summary>
/// The SVD of D·W·T (<see cref="InputTransform"/> T on the inputs, D = diag(d) on the output rows, I unless given) of one
/// weight [Rows, Columns], kept so that a rank can be chosen from its singular values before the factors are formed.
/// Truncating to rank r keeps W′ = D⁻¹·U_r·Σ_r·V_rᵀ·T⁻¹, whose error in the weighted coordinates is exactly the dropped
/// energy (Eckart–Young): ‖D·(W − W′)·T‖_F² = Σ_{i ≥ r} σᵢ². With d_i = √I_i, I_i the Fisher information of row i, this is
/// FWSVD (Hsu et al. 2022, "Language model compression with weighted low-rank factorization"): the rank-r W′ with the
/// least Σ_i I_i‖W_i − W′_i‖², exactly, because a weight shared by a whole row is a change of coordinates.
/// </summary>
public sealed class WeightSpectrum
{
    private readonly ThinSvd _svd;
    private readonly InputTransform _transform;
    private readonly double[]? _rowScale;
    private readonly double[] _tailEnergy; // _tailEnergy[r] = Σ_{i ≥ r} σᵢ²

    public int Rows => _svd.Rows;
    public int Columns => _svd.Columns;
    /// <summary>σ of D·W·T, descending.</summary>
    public IReadOnlyList<double> SingularValues => _svd.S;
    /// <summary>‖D·W·T‖_F² = Σ σᵢ².</summary>
    public double Energy => _tailEnergy[0];

    private WeightSpectrum(ThinSvd svd, InputTransform transform, double[]? rowScale)
    {
        _svd = svd;
        _transform = transform;
        _rowScale = rowScale;
        _tailEnergy = new double[svd.S.Length + 1];
        for (int i = svd.S.Length - 1; i >= 0; i--) _tailEnergy[i] = _tailEnergy[i + 1] + svd.S[i] * svd.S[i];
    }

    /// <param name="rowScale">d, one positive finite scale per output row; null for D = I.</param>
    public static WeightSpectrum Of(float[] w, int rows, int columns, InputTransform transform, int threads = 0, double[]? rowScale = null)
    {
        if (w.Length != (long)rows * columns) throw new ArgumentException($"{w.Length} weights are not {rows}×{columns}", nameof(w));
        var a = transform.Apply(w, rows);
        if (rowScale is not null)
        {
            if (rowScale.Length != rows) throw new ArgumentException($"{rowScale.Length} row scales for {rows} rows", nameof(rowScale));
            for (int i = 0; i < rows; i++)
            {
                double d = rowScale[i];
                if (!(d > 0 && double.IsFinite(d))) throw new ArgumentException($"row scales must be positive and finite, not {d}", nameof(rowScale));
                for (int j = 0; j < columns; j++) a[(long)i * columns + j] *= d;
            }
        }
        return new WeightSpectrum(Svd.Decompose(a, rows, columns, threads), transform, rowScale);
    }

    /// <summary>Σ_{i ≥ rank} σᵢ²: what truncating to <paramref name="rank"/> loses, ‖D·(W − W′)·T‖_F².</summary>
    public double TruncationLoss(int rank) => _tailEnergy[Math.Clamp(rank, 0, _svd.S.Length)];

    /// <summary>
    /// The factors of rank <paramref name="rank"/>, the singular values split evenly between them (D⁻¹·U_r·Σ_r^½ and
    /// Σ_r^½·V_rᵀ·T⁻¹, as SVD-LLM stores them; FWSVD puts all of Σ_r on the left, which has the same product): balanced
    /// factors keep both within the range of a 16-bit float.
    /// </summary>
    public LowRankFactors Truncate(int rank)
    {
        int k = _svd.S.Length;
        if (rank < 1 || rank > k) throw new ArgumentOutOfRangeException(nameof(rank), $"rank {rank} is outside 1..{k}");
        int m = Rows, n = Columns;
        var u = new float[(long)m * rank];
        for (int i = 0; i < m; i++)
        {
            double unweight = _rowScale is null ? 1 : 1 / _rowScale[i];
            for (int j = 0; j < rank; j++) u[i * rank + j] = (float)(_svd.U[i * k + j] * Math.Sqrt(_svd.S[j]) * unweight);
        }
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
