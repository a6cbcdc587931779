using LlmShrink.Compression.Quantization;
using LlmShrink.Representations;

namespace LlmShrink.Training;

/// <summary>
/// Fake quantization of one linear weight [out, in] on the grid of a GPTQ-packed layer (a quantized student in
/// training). The forward pass computes with
///   Ŵ[r, c] = s · (clamp(round(u[r, c]) + z, 0, 2^b − 1) − z),   s = scales[g, r], z = zeros[g, r], g = g_idx[c]
/// (<see cref="QuantizedTraining.WeightsAndScales"/>: u is a latent float weight measured in steps of its grid, W / s,
/// initialized to the stored code − z), or with Ŵ = s · (code − z) and the stored codes frozen
/// (<see cref="QuantizedTraining.Scales"/>, PEQA). Rounding is half to even, as <see cref="QuantGrid.Code"/> quantizes.
/// <para>Why u and not W: LSQ (Esser et al. 2019) keeps the latent W in weight units, so a scale change at fixed W
/// re-rounds W / s and its straight-through step-size gradient is round(v) − v (Eq. 3, v = W / s). A GPTQ student's latent
/// starts exactly on its grid (the packed codes are all it has; the teacher's float weights would round to RTN's codes,
/// not GPTQ's), where round(v) − v = 0 for every weight: the scales get no gradient at all, and on tinylit-8m's w3g128
/// GPTQ student that version fell to only 0.01040 held-out KL from 0.01159 in 100 steps where PEQA fell to 0.00748.
/// With u held fixed as s moves, the scale's gradient is code − z, PEQA's true derivative, in both modes.</para>
/// <para>s is the latent scale rounded to float16, because the checkpoint stores F16 scales: the forward then computes
/// with exactly the numbers <see cref="Pack"/> writes, so the re-packed layer is the trained one to the bit. Likewise a
/// learned zero point is the latent float rounded and clamped to [0, 2^b − 1]. Both roundings pass gradients straight
/// through.</para>
/// <para>Backward, with G = ∂L/∂Ŵ and q = round(u) + z, inside the grid (0 ≤ q ≤ 2^b − 1): ∂Ŵ/∂u = s (the
/// straight-through estimator for round, Bengio et al. 2013, as LLM-QAT trains), ∂Ŵ/∂s = q − z, ∂Ŵ/∂z = 0; clamped:
/// ∂Ŵ/∂u = 0, ∂Ŵ/∂s = q_clamped − z, ∂Ŵ/∂z = −s (the zero point shifts the clamped level, as LSQ+'s learnable offset,
/// Bhalgat et al. 2020). Because AdamW normalizes each value's step, u moves by about its own learning rate in grid steps
/// per update whatever s is (<see cref="Parameter.RateScale"/>): a code flips after about half a step of consistent push.</para>
/// </summary>
public sealed class FakeQuantization
{
    public QuantizedTraining Mode { get; }
    public QuantScheme Scheme { get; }
    public int Rows { get; }
    public int Columns { get; }
    public int GroupCount { get; }
    /// <summary>
    /// The learnable scale of each (group, row), [GroupCount·Rows] in the checkpoint's order (group-major). A vector, so
    /// AdamW does not decay it (<see cref="Parameter.Decays"/>): a step size, not a weight.
    /// </summary>
    public Parameter Scales { get; }
    /// <summary>
    /// Learnable zero points as latent floats (rounded in the forward), when the grid is asymmetric and the weights
    /// train; null otherwise (a symmetric grid's zero is 2^(b−1) by definition; PEQA freezes them).
    /// </summary>
    public Parameter? Zeros { get; }

    private readonly int[] _groupIndex;
    private readonly int[] _frozenZeros;
    private readonly byte[] _storedCodes;
    private readonly float[] _weights;
    private readonly float _maxCode;

    public FakeQuantization(string module, QuantizedMatrix stored, QuantizedTraining mode)
    {
        Mode = mode;
        Scheme = stored.Scheme;
        (Rows, Columns, GroupCount) = (stored.Rows, stored.Columns, stored.GroupCount);
        _groupIndex = (int[])stored.GroupIndex.Clone();
        _maxCode = stored.Scheme.MaxCode;
        Scales = new Parameter(module + ".scales", (float[])stored.Scales.Clone(), stored.Scales.Length);
        bool learnZeros = mode == QuantizedTraining.WeightsAndScales && !GptqRepresentation.IsSymmetric(stored);
        Zeros = learnZeros ? new Parameter(module + ".zeros", [.. stored.Zeros.Select(z => (float)z)], stored.Zeros.Length) : null;
        _frozenZeros = (int[])stored.Zeros.Clone();
        _storedCodes = (byte[])stored.Codes.Clone();
        _weights = new float[(long)Rows * Columns];
    }

    /// <summary>The latent weight u at the start: every stored code − z, so that the forward gives back the stored layer.</summary>
    public float[] InitialLatent()
    {
        var u = new float[(long)Rows * Columns];
        ForRows((r, _, z) =>
        {
            for (int c = 0, i = r * Columns; c < Columns; c++, i++) u[i] = _storedCodes[i] - z[_groupIndex[c]];
        });
        return u;
    }

    /// <summary>Whether the latent weight trains (else only the grid does).</summary>
    public bool TrainsWeights => Mode == QuantizedTraining.WeightsAndScales;

    /// <summary>The grid's learnable tensors: the scales, and the zero points when they train.</summary>
    public IEnumerable<Parameter> Parameters => Zeros is null ? [Scales] : [Scales, Zeros];

    /// <summary>Ŵ of <paramref name="latent"/> [Rows, Columns] in an array the object owns, overwritten by the next call.</summary>
    public float[] Forward(float[] latent)
    {
        ForRows((r, s, z) =>
        {
            int start = r * Columns;
            for (int c = 0; c < Columns; c++)
            {
                int g = _groupIndex[c], i = start + c;
                _weights[i] = s[g] * (Code(latent[i], i, z[g]) - z[g]);
            }
        });
        return _weights;
    }

    /// <summary>
    /// Given ∂L/∂Ŵ in <paramref name="dWeights"/> [Rows, Columns], adds the gradients of the header's formulas into the
    /// scales' and zero points' <see cref="Parameter.Grad"/> and (when the weights train) into <paramref name="latentGrad"/>.
    /// </summary>
    public void Backward(float[] dWeights, float[] latent, float[] latentGrad)
    {
        var scaleGrad = Scales.Grad;
        var zeroGrad = Zeros?.Grad;
        ForRows((r, s, z) =>
        {
            // Sums over a group's columns in double: 128 terms of either sign.
            Span<double> ds = stackalloc double[GroupCount], dz = stackalloc double[GroupCount];
            int start = r * Columns;
            for (int c = 0; c < Columns; c++)
            {
                int g = _groupIndex[c], i = start + c;
                float grad = dWeights[i], q = Code(latent[i], i, z[g]);
                ds[g] += grad * (q - z[g]);
                if (!TrainsWeights) continue;
                float unclamped = MathF.Round(latent[i]) + z[g];
                if (unclamped >= 0 && unclamped <= _maxCode) latentGrad[i] += grad * s[g];
                else dz[g] -= grad * s[g];
            }
            for (int g = 0; g < GroupCount; g++)
            {
                scaleGrad[g * Rows + r] += (float)ds[g];
                if (zeroGrad is not null) zeroGrad[g * Rows + r] += (float)dz[g];
            }
        });
    }

    /// <summary>
    /// The layer as the forward computes it, as codes and grids to pack: Dequantize() of the result is <see cref="Forward"/>
    /// of the same <paramref name="latent"/> to the bit. Bits, group size, g_idx and (with zeros frozen) zero points are the stored ones.
    /// </summary>
    public QuantizedMatrix Pack(float[] latent)
    {
        var m = new QuantizedMatrix(Rows, Columns, Scheme, GroupCount, new byte[(long)Rows * Columns], new float[GroupCount * Rows],
            new int[GroupCount * Rows], (int[])_groupIndex.Clone());
        ForRows((r, s, z) =>
        {
            for (int g = 0; g < GroupCount; g++) (m.Scales[g * Rows + r], m.Zeros[g * Rows + r]) = (s[g], z[g]);
            int start = r * Columns;
            for (int c = 0; c < Columns; c++)
            {
                int g = _groupIndex[c], i = start + c;
                m.Codes[i] = (byte)Code(latent[i], i, z[g]);
            }
        });
        return m;
    }

    /// <summary>The code of value <paramref name="i"/>: frozen, or the latent weight rounded onto the grid (as a float: exact for codes ≤ 255).</summary>
    private float Code(float latent, int i, int z) =>
        !TrainsWeights ? _storedCodes[i] : Math.Clamp(MathF.Round(latent) + z, 0, _maxCode);

    private delegate void RowAction(int row, ReadOnlySpan<float> scales, ReadOnlySpan<int> zeros);

    /// <summary>Runs <paramref name="action"/> for every row in parallel, with the row's grids as the forward uses them.</summary>
    private void ForRows(RowAction action)
    {
        const int RowsPerTask = 16;
        Parallel.For(0, (Rows + RowsPerTask - 1) / RowsPerTask, chunk =>
        {
            Span<float> s = stackalloc float[GroupCount];
            Span<int> z = stackalloc int[GroupCount];
            for (int r = chunk * RowsPerTask; r < Math.Min(Rows, (chunk + 1) * RowsPerTask); r++)
            {
                for (int g = 0; g < GroupCount; g++)
                {
                    int k = g * Rows + r;
                    s[g] = QuantGrid.ToStoredScale(Scales.Value[k]);
                    z[g] = Zeros is null ? _frozenZeros[k] : (int)Math.Clamp(MathF.Round(Zeros.Value[k]), 0, _maxCode);
                }
                action(r, s, z);
            }
        });
    }
}
