using System.Runtime.Intrinsics;
using LlmShrink.Formats;
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
    private readonly object _owner;         // the mapped tensor or pinned array the weights live in
    private readonly sbyte* _weightPointer; // [out, in]
    private readonly float[] _weightScales; // [out]
    private readonly float[]? _inverseSmoothing;
    private readonly float[]? _bias;

    [ThreadStatic] private static sbyte[]? t_q;
    [ThreadStatic] private static float[]? t_smoothed, t_rowScales;
    [ThreadStatic] private static int[]? t_acc;
    [ThreadStatic] private static RowJob? t_job;

    /// <summary>int8 weights plus one float scale per output channel.</summary>
    public override long WeightBytes => (long)InFeatures * OutFeatures + 4L * OutFeatures;

    /// <summary>
    /// A stored I8 [out, in] tensor, read in place from the memory mapping (the file must stay open): loading copies
    /// nothing and the weights take no memory of the process's own.
    /// </summary>
    public W8A8Linear(StoredTensor weight, ReadOnlySpan<float> weightScales, float[]? bias = null)
        : this(checked((int)weight.Columns), checked((int)weight.Rows), (sbyte*)weight.Pointer, weight, weightScales, null, bias)
    {
        if (weight.Type != TensorType.I8) throw new ArgumentException($"{weight} is not I8", nameof(weight));
    }

    /// <param name="weights">int8 [out, in], copied into a pinned array.</param>
    /// <param name="weightScales">[out]: W[o, i] ≈ weightScales[o]·weights[o, i].</param>
    /// <param name="smoothing">[in] or null: x is divided by it before quantization.</param>
    public W8A8Linear(int inFeatures, int outFeatures, ReadOnlySpan<sbyte> weights, ReadOnlySpan<float> weightScales, float[]? smoothing = null, float[]? bias = null)
        : this(inFeatures, outFeatures, Pin(weights, inFeatures, outFeatures, out var pinned), pinned, weightScales, smoothing, bias) { }

    private W8A8Linear(int inFeatures, int outFeatures, sbyte* weights, object owner, ReadOnlySpan<float> weightScales, float[]? smoothing, float[]? bias)
        : base(inFeatures, outFeatures)
    {
        if (weightScales.Length != outFeatures) throw new ArgumentException($"weightScales has {weightScales.Length} entries, expected {outFeatures}", nameof(weightScales));
        if (smoothing is not null && smoothing.Length != inFeatures) throw new ArgumentException($"smoothing has {smoothing.Length} entries, expected {inFeatures}", nameof(smoothing));
        if (bias is not null && bias.Length != outFeatures) throw new ArgumentException($"bias has {bias.Length} entries, expected {outFeatures}", nameof(bias));
        _weightPointer = weights;
        _owner = owner;
        _weightScales = weightScales.ToArray();
        if (smoothing is not null)
        {
            _inverseSmoothing = new float[inFeatures];
            for (int i = 0; i < inFeatures; i++) _inverseSmoothing[i] = 1f / smoothing[i];
        }
        _bias = bias;
    }

    private static sbyte* Pin(ReadOnlySpan<sbyte> weights, int inFeatures, int outFeatures, out object pinned)
    {
        if (inFeatures <= 0 || outFeatures <= 0) throw new ArgumentException("dimensions must be positive");
        if (weights.Length != (long)inFeatures * outFeatures) throw new ArgumentException($"weights has {weights.Length} entries, expected {outFeatures}×{inFeatures}", nameof(weights));
        var address = PinnedCopy(weights, out var copy);
        pinned = copy;
        return address;
    }

    public override void Apply(ReadOnlySpan<float> x, Span<float> y, int n, WorkerPool pool, int threads)
    {
        MatMulShapes.Check(x.Length, y.Length, n, InFeatures, OutFeatures);
        if (n == 0) return;
        GC.KeepAlive(_owner);
        if (t_q is null || t_q.Length < n * InFeatures) t_q = new sbyte[n * InFeatures];
        if (t_rowScales is null || t_rowScales.Length < n) t_rowScales = new float[n];
        if (t_acc is null || t_acc.Length < n * OutFeatures) t_acc = new int[n * OutFeatures];

        // Quantizing and rescaling are per row: split rows across threads so they do not serialize the prompt.
        var job = t_job ??= new RowJob();
        fixed (float* px = x, py = y)
        fixed (sbyte* pq = t_q)
        fixed (float* pScales = t_rowScales)
        fixed (int* pAcc = t_acc)
        {
            job.Layer = this; job.X = px; job.Y = py; job.Q = pq; job.RowScales = pScales; job.Acc = pAcc;
            job.Rescale = false;
            pool.For(n, job, threads);
            Int8MatMul.Multiply(new ReadOnlySpan<sbyte>(pq, n * InFeatures), _weightPointer, new Span<int>(pAcc, n * OutFeatures), n, InFeatures, OutFeatures, pool, threads);
            job.Rescale = true;
            pool.For(n, job, threads);
            job.Layer = null; job.X = job.Y = job.RowScales = null; job.Q = null; job.Acc = null;
        }
    }

    /// <summary>Rows [begin, end): either quantize x (after smoothing) or turn the integer sums into y.</summary>
    private sealed class RowJob : IParallelWork
    {
        public W8A8Linear? Layer;
        public float* X, Y, RowScales;
        public sbyte* Q;
        public int* Acc;
        public bool Rescale;

        public void Execute(int begin, int end, int worker)
        {
            var layer = Layer!;
            for (int i = begin; i < end; i++)
                if (Rescale) layer.RescaleRow(new ReadOnlySpan<int>(Acc + (long)i * layer.OutFeatures, layer.OutFeatures), RowScales[i], new Span<float>(Y + (long)i * layer.OutFeatures, layer.OutFeatures));
                else layer.QuantizeRow(new ReadOnlySpan<float>(X + (long)i * layer.InFeatures, layer.InFeatures), new Span<sbyte>(Q + (long)i * layer.InFeatures, layer.InFeatures), ref RowScales[i]);
        }
    }

    /// <summary>q = round(x̃ / s_x) with x̃ = x / smoothing and s_x = max|x̃| / 127.</summary>
    private void QuantizeRow(ReadOnlySpan<float> row, Span<sbyte> q, ref float scale)
    {
        if (_inverseSmoothing is not null)
        {
            var smoothed = t_smoothed is not null && t_smoothed.Length >= InFeatures ? t_smoothed : t_smoothed = new float[InFeatures];
            System.Numerics.Tensors.TensorPrimitives.Multiply(row, _inverseSmoothing, smoothed.AsSpan(0, InFeatures));
            row = smoothed.AsSpan(0, InFeatures);
        }
        QuantizeActivations.Quantize(row, InFeatures, q, new Span<float>(ref scale), default);
    }

    /// <summary>y[o] = Σq_x·q_w · s_x · s_w[o] (+ b[o]), 16 outputs at a time.</summary>
    private void RescaleRow(ReadOnlySpan<int> acc, float rowScale, Span<float> y)
    {
        int o = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var s = Vector512.Create(rowScale);
            for (; o <= OutFeatures - 16; o += 16)
            {
                var v = Vector512.ConvertToSingle(Vector512.Create(acc.Slice(o, 16))) * s * Vector512.Create(_weightScales.AsSpan(o, 16));
                if (_bias is not null) v += Vector512.Create(_bias.AsSpan(o, 16));
                v.CopyTo(y.Slice(o, 16));
            }
        }
        for (; o < OutFeatures; o++) y[o] = acc[o] * rowScale * _weightScales[o] + (_bias is null ? 0 : _bias[o]);
    }
}
