namespace LlmShrink.Compression.Quantization;

/// <summary>
/// AutoRound's trainable quantizer of one weight W [rows, columns] (Cheng et al. 2023, "Optimize Weight Rounding via
/// Signed Gradient Descent", Eq. 1–3): a rounding offset V ∈ [−0.5, 0.5] per weight and, per (column group, row), factors
/// α, β ∈ [0.5, 1] that shrink the group's max and min before its grid is fitted:
/// <code>
///   min' = β·min(W_g, 0), max' = α·max(W_g, 0), (s, z) = the grid <see cref="QuantGrid.Fit(float, float, int, bool)"/> fits to [min', max'],
///   Ŵ = s·(clamp(round(W/s + V) + z, 0, 2^b − 1) − z).
/// </code>
/// With V = 0 and α = β = 1 this is round-to-nearest (<see cref="Rtn"/>). The forward computes exactly what
/// <see cref="Quantize"/> stores (the float16 scale included), so the optimized loss is the stored layer's.
/// <para>Gradients use the straight-through estimator: round(·), the zero point's round and the scale's rounding to
/// float16 count as identity in the backward. Where the code is inside the grid, Ŵ = s·round(W/s + V), so
/// ∂Ŵ/∂V = s and ∂Ŵ/∂s = round(W/s + V) − W/s; where it is clamped to q ∈ {0, 2^b − 1}, Ŵ = s·q − s·z with
/// s·z ≈ −min' (asymmetric), so ∂Ŵ/∂V = 0, ∂Ŵ/∂s = q − z − min'/s and ∂Ŵ/∂min' = 1 (symmetric: z is fixed, ∂Ŵ/∂s = q − z).
/// The scale is (max' − min')/(2^b − 1) asymmetric and 2·max(max', −min')/(2^b − 1) symmetric, which carries the
/// gradient on to α and β.</para>
/// </summary>
public sealed class LearnedRounding
{
    public int Rows { get; }
    public int Columns { get; }
    public QuantScheme Scheme { get; }
    /// <summary>V, row-major [rows, columns].</summary>
    public float[] Offsets { get; }
    public float[] OffsetGrad { get; }
    /// <summary>α, per (group, row): [groups, rows] as <see cref="QuantizedMatrix.Scales"/>.</summary>
    public float[] MaxFactors { get; }
    public float[] MaxFactorGrad { get; }
    /// <summary>β, laid out as <see cref="MaxFactors"/>.</summary>
    public float[] MinFactors { get; }
    public float[] MinFactorGrad { get; }

    public const float MinFactor = 0.5f;

    private readonly float[] _w;
    private readonly float[] _min, _max; // min(W_g, 0) and max(W_g, 0) per (group, row)
    private readonly QuantGrid[] _grids; // of the last FakeQuantize
    private readonly int _width;

    /// <param name="w">W, row-major [rows, columns]; read, never written.</param>
    public LearnedRounding(float[] w, int rows, int columns, QuantScheme scheme)
    {
        if (w.Length != (long)rows * columns) throw new ArgumentException($"learned rounding: W has {w.Length} values, not {rows}×{columns}");
        if (scheme.Granularity == QuantGranularity.PerTensor)
            throw new ShrinkException("learned rounding: a per-tensor grid has no per-group clipping to learn; use groups or channels");
        Rows = rows;
        Columns = columns;
        Scheme = scheme;
        _w = w;
        _width = scheme.GroupWidth(columns);
        int grids = scheme.GroupCount(columns) * rows;
        Offsets = new float[w.Length];
        OffsetGrad = new float[w.Length];
        MaxFactors = new float[grids];
        MinFactors = new float[grids];
        Reset();
        MaxFactorGrad = new float[grids];
        MinFactorGrad = new float[grids];
        _grids = new QuantGrid[grids];
        _min = new float[grids];
        _max = new float[grids];
        for (int r = 0; r < rows; r++)
            for (int g = 0; g * _width < columns; g++)
            {
                var span = w.AsSpan(r * columns + g * _width, Math.Min(_width, columns - g * _width));
                _min[g * rows + r] = MathF.Min(System.Numerics.Tensors.TensorPrimitives.Min(span), 0f);
                _max[g * rows + r] = MathF.Max(System.Numerics.Tensors.TensorPrimitives.Max(span), 0f);
            }
    }

    /// <summary>The grid of (group, row) for the current α and β, as it will be stored.</summary>
    public QuantGrid Grid(int group, int row)
    {
        int i = group * Rows + row;
        return QuantGrid.Fit(MinFactors[i] * _min[i], MaxFactors[i] * _max[i], Scheme.Bits, Scheme.Symmetric);
    }

    /// <summary>Writes Ŵ for the current V, α, β into <paramref name="destination"/> ([rows, columns]).</summary>
    public void FakeQuantize(Span<float> destination)
    {
        int groups = _grids.Length / Rows;
        for (int g = 0; g < groups; g++)
            for (int r = 0; r < Rows; r++) _grids[g * Rows + r] = Grid(g, r);
        int maxCode = Scheme.MaxCode;
        for (int r = 0; r < Rows; r++)
        {
            int row = r * Columns;
            for (int c = 0; c < Columns; c++)
            {
                var grid = _grids[c / _width * Rows + r];
                int q = Math.Clamp(Round(_w[row + c] / grid.Scale + Offsets[row + c]) + grid.Zero, 0, maxCode);
                destination[row + c] = grid.Scale * (q - grid.Zero);
            }
        }
    }

    /// <summary>Adds ∂L/∂V, ∂L/∂α, ∂L/∂β given <paramref name="dW"/> = ∂L/∂Ŵ at the last <see cref="FakeQuantize"/>.</summary>
    public void Backward(ReadOnlySpan<float> dW)
    {
        int maxCode = Scheme.MaxCode, groups = _grids.Length / Rows;
        for (int r = 0; r < Rows; r++)
            for (int g = 0; g < groups; g++)
            {
                int i = g * Rows + r;
                var grid = _grids[i];
                float s = grid.Scale, minShrunk = MinFactors[i] * _min[i], maxShrunk = MaxFactors[i] * _max[i];
                double dScale = 0, dMin = 0;
                int end = Math.Min((g + 1) * _width, Columns);
                for (int c = g * _width; c < end; c++)
                {
                    int k = r * Columns + c;
                    float u = _w[k] / s;
                    int rounded = Round(u + Offsets[k]);
                    int q = rounded + grid.Zero;
                    if (q >= 0 && q <= maxCode)
                    {
                        OffsetGrad[k] += dW[k] * s;
                        dScale += dW[k] * (rounded - u);
                    }
                    else
                    {
                        q = Math.Clamp(q, 0, maxCode);
                        if (Scheme.Symmetric) dScale += dW[k] * (q - grid.Zero);
                        else
                        {
                            dScale += dW[k] * (q - grid.Zero - minShrunk / s);
                            dMin += dW[k];
                        }
                    }
                }
                if (minShrunk == 0 && maxShrunk == 0) continue; // an all-zero group's grid is the fixed [−1, 1]
                if (Scheme.Symmetric)
                {
                    // s = 2m/(2^b − 1), m = max(max', −min'): the gradient reaches whichever bound is the wider.
                    double dM = dScale * 2 / maxCode;
                    if (maxShrunk >= -minShrunk) MaxFactorGrad[i] += (float)(dM * _max[i]);
                    else MinFactorGrad[i] += (float)(-dM * _min[i]);
                }
                else
                {
                    // s = (max' − min')/(2^b − 1).
                    MaxFactorGrad[i] += (float)(dScale / maxCode * _max[i]);
                    MinFactorGrad[i] += (float)((dMin - dScale / maxCode) * _min[i]);
                }
            }
    }

    /// <summary>Back to round-to-nearest: V = 0, α = β = 1.</summary>
    public void Reset()
    {
        Array.Clear(Offsets);
        Array.Fill(MaxFactors, 1f);
        Array.Fill(MinFactors, 1f);
    }

    public void ZeroGrad()
    {
        Array.Clear(OffsetGrad);
        Array.Clear(MaxFactorGrad);
        Array.Clear(MinFactorGrad);
    }

    /// <summary>
    /// One step of signed gradient descent (AutoRound's SignSGD): every parameter moves by <paramref name="learningRate"/>
    /// against the sign of its gradient (not at all where it is 0), then back into its range — V into [−0.5, 0.5], α and β
    /// into [0.5, 1]. A fixed step per parameter suits a bounded search space: with lr·steps ≈ 1, V can cross the whole
    /// interval but no further.
    /// </summary>
    public void SignStep(float learningRate, float clippingLearningRate)
    {
        Step(Offsets, OffsetGrad, learningRate, -0.5f, 0.5f);
        Step(MaxFactors, MaxFactorGrad, clippingLearningRate, MinFactor, 1f);
        Step(MinFactors, MinFactorGrad, clippingLearningRate, MinFactor, 1f);
    }

    private static void Step(float[] value, float[] grad, float lr, float low, float high)
    {
        for (int i = 0; i < value.Length; i++)
            value[i] = Math.Clamp(value[i] - lr * MathF.Sign(grad[i]), low, high);
    }

    /// <summary>The layer quantized with the current V, α, β: its dequantized weights equal <see cref="FakeQuantize"/>'s.</summary>
    public QuantizedMatrix Quantize()
    {
        var q = QuantizedMatrix.Create(Rows, Columns, Scheme);
        int groups = q.GroupCount;
        for (int g = 0; g < groups; g++)
            for (int r = 0; r < Rows; r++) q.SetGrid(g, r, Grid(g, r));
        for (int r = 0; r < Rows; r++)
            for (int c = 0; c < Columns; c++)
            {
                var grid = q.Grid(c / _width, r);
                q.Codes[r * Columns + c] = (byte)Math.Clamp(Round(_w[r * Columns + c] / grid.Scale + Offsets[r * Columns + c]) + grid.Zero, 0, Scheme.MaxCode);
            }
        return q;
    }

    /// <summary>Round half to even, as <see cref="QuantGrid.Code"/> (and torch.round).</summary>
    private static int Round(float x) => (int)MathF.Round(x, MidpointRounding.ToEven);
}
