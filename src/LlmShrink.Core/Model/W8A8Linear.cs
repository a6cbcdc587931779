using System.Runtime.CompilerServices;
using LlmShrink.Kernels;

namespace LlmShrink.Model;

/// <summary>
/// W8A8 (SmoothQuant, arXiv:2211.10438): int8 weights with one scale per output channel, activations quantized to int8
/// per token at run time (s_x = max|x̃|/127), y = s_x·s_w[o]·Σ q_x·q_w in exact integers (<see cref="Int8MatMul"/>).
/// An optional smoothing vector divides x per input channel first; the weights were multiplied by it before
/// quantization, which moves activation outliers into the weights.
/// </summary>
public sealed unsafe class W8A8Linear : Linear
{
    private readonly sbyte[] _weights;      // [out, in], pinned
    private readonly sbyte* _weightPointer;
    private readonly float[] _weightScales; // [out]
    private readonly float[]? _inverseSmoothing;
    private readonly float[]? _bias;

    [ThreadStatic] private static sbyte[]? t_q;
    [ThreadStatic] private static float[]? t_smoothed, t_rowScales;
    [ThreadStatic] private static int[]? t_acc;

    /// <param name="weights">int8 [out, in].</param>
    /// <param name="weightScales">[out]: W[o, i] ≈ weightScales[o]·weights[o, i].</param>
    /// <param name="smoothing">[in] or null: x is divided by it before quantization.</param>
    /// <summary>int8 weights plus one float scale per output channel.</summary>
    public override long WeightBytes => (long)InFeatures * OutFeatures + 4L * OutFeatures;

    public W8A8Linear(int inFeatures, int outFeatures, ReadOnlySpan<sbyte> weights, ReadOnlySpan<float> weightScales, float[]? smoothing = null, float[]? bias = null)
        : base(inFeatures, outFeatures)
    {
        if (inFeatures <= 0 || outFeatures <= 0) throw new ArgumentException("dimensions must be positive");
        if (weights.Length != (long)inFeatures * outFeatures) throw new ArgumentException($"weights has {weights.Length} entries, expected {outFeatures}×{inFeatures}", nameof(weights));
        if (weightScales.Length != outFeatures) throw new ArgumentException($"weightScales has {weightScales.Length} entries, expected {outFeatures}", nameof(weightScales));
        if (smoothing is not null && smoothing.Length != inFeatures) throw new ArgumentException($"smoothing has {smoothing.Length} entries, expected {inFeatures}", nameof(smoothing));
        if (bias is not null && bias.Length != outFeatures) throw new ArgumentException($"bias has {bias.Length} entries, expected {outFeatures}", nameof(bias));
        _weights = GC.AllocateUninitializedArray<sbyte>(weights.Length, pinned: true);
        weights.CopyTo(_weights);
        _weightPointer = (sbyte*)Unsafe.AsPointer(ref _weights[0]);
        _weightScales = weightScales.ToArray();
        if (smoothing is not null)
        {
            _inverseSmoothing = new float[inFeatures];
            for (int i = 0; i < inFeatures; i++) _inverseSmoothing[i] = 1f / smoothing[i];
        }
        _bias = bias;
    }

    public override void Apply(ReadOnlySpan<float> x, Span<float> y, int n, WorkerPool pool, int threads)
    {
        if (x.Length < (long)n * InFeatures) throw new ArgumentException($"x has {x.Length} floats, needs {n}×{InFeatures}", nameof(x));
        if (y.Length < (long)n * OutFeatures) throw new ArgumentException($"y has {y.Length} floats, needs {n}×{OutFeatures}", nameof(y));
        if (n == 0) return;
        if (t_q is null || t_q.Length < n * InFeatures) t_q = new sbyte[n * InFeatures];
        if (t_rowScales is null || t_rowScales.Length < n) t_rowScales = new float[n];
        if (t_acc is null || t_acc.Length < n * OutFeatures) t_acc = new int[n * OutFeatures];
        if (_inverseSmoothing is not null && (t_smoothed is null || t_smoothed.Length < InFeatures)) t_smoothed = new float[InFeatures];

        for (int i = 0; i < n; i++)
        {
            var row = x.Slice(i * InFeatures, InFeatures);
            if (_inverseSmoothing is not null)
            {
                System.Numerics.Tensors.TensorPrimitives.Multiply(row, _inverseSmoothing, t_smoothed);
                row = t_smoothed.AsSpan(0, InFeatures);
            }
            QuantizeActivations.Quantize(row, InFeatures, t_q.AsSpan(i * InFeatures, InFeatures), t_rowScales.AsSpan(i, 1), default);
        }
        Int8MatMul.Multiply(t_q.AsSpan(0, n * InFeatures), _weightPointer, t_acc, n, InFeatures, OutFeatures, pool, threads);
        for (int i = 0; i < n; i++)
        {
            float rowScale = t_rowScales[i];
            var acc = t_acc.AsSpan(i * OutFeatures, OutFeatures);
            var yi = y.Slice(i * OutFeatures, OutFeatures);
            for (int o = 0; o < OutFeatures; o++) yi[o] = acc[o] * rowScale * _weightScales[o] + (_bias is null ? 0 : _bias[o]);
        }
    }
}
