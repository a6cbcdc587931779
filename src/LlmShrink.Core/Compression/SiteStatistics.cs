using System.Numerics.Tensors;
using LlmShrink.Compression.LowRank;
using LlmShrink.Compression.Quantization;
using LlmShrink.Kernels;
using LlmShrink.Model;
using LlmShrink.LinearAlgebra;

namespace LlmShrink.Compression;

/// <summary>What a compression method reads about the inputs of the layers it compresses.</summary>
[Flags]
public enum StatisticsNeeds
{
    None = 0,
    /// <summary>GPTQ's H = 2/n Σ x xᵀ.</summary>
    Hessian = 1,
    /// <summary>Per-channel mean |x| and max |x| (AWQ, SmoothQuant).</summary>
    ChannelMagnitudes = 2,
    /// <summary>A subsample of raw input rows, for output-error searches (AWQ).</summary>
    Samples = 4,
    /// <summary>
    /// Not a statistic of a site: the block's calibration inputs and the uncompressed block's outputs on them, for a
    /// method that reconstructs the whole block's output (AutoRound). See <see cref="BlockCompression.BlockInputs"/>.
    /// </summary>
    BlockOutputs = 8,
    /// <summary>
    /// Not a statistic of a site: the uncompressed model's hidden states after the block, carried through every block
    /// beside the compressed ones (AutoRound's targets). See <see cref="BlockCompression.ReferenceOutputs"/>.
    /// </summary>
    ReferenceOutputs = 16,
}

/// <summary>Statistics of the calibration activations reaching one input site of one block.</summary>
public sealed class SiteStatistics
{
    private HessianAccumulator? _hessian;
    private double[] _absSum;
    private double[] _squareSum;
    private double[]? _hessianMatrix;
    // H's array is shared with copies (a trial's, see Copy) until one of them changes it: then that one takes its own.
    private bool _hessianShared;
    private (double Dampening, WhiteningTransform Transform)? _whitening; // of H as it is now
    private bool _hessianTaken;
    private float[]? _joinedSamples;
    private readonly List<float[]> _samples = new();
    private readonly int _maxSampleTokens;

    public int Columns { get; private set; }
    public long Tokens { get; private set; }
    /// <summary>Per input channel max |x| over all calibration tokens.</summary>
    public float[] AbsMax { get; private set; }
    public int SampleTokens { get; private set; }

    private SiteStatistics(SiteStatistics source)
    {
        Columns = source.Columns;
        Tokens = source.Tokens;
        SampleTokens = source.SampleTokens;
        _maxSampleTokens = source._maxSampleTokens;
        AbsMax = (float[])source.AbsMax.Clone();
        _absSum = (double[])source._absSum.Clone();
        _squareSum = (double[])source._squareSum.Clone();
        if (source._hessian is not null || source._hessianMatrix is not null)
        {
            _hessianMatrix = source.Hessian();
            _hessianShared = source._hessianShared = true;
            _whitening = source._whitening;
        }
        _hessianTaken = source._hessianTaken;
        _joinedSamples = (float[])source.Samples().Clone();
        _samples.Add(_joinedSamples);
    }

    /// <summary>
    /// An independent copy (Hessian and samples included) that a trial may rescale and consume; statistics are final once
    /// copied. The Hessian is copied only when either side changes or consumes it: most trials only read it, or not at all
    /// (a down_proj's is 0.5 GB on the Llama-3.2-1B shape, and <c>analyze</c> tries three methods on every layer).
    /// </summary>
    public SiteStatistics Copy() => new(this);

    public SiteStatistics(int columns, StatisticsNeeds needs, int maxSampleTokens)
    {
        Columns = columns;
        _hessian = needs.HasFlag(StatisticsNeeds.Hessian) ? new HessianAccumulator(columns) : null;
        _absSum = new double[columns];
        _squareSum = new double[columns];
        AbsMax = new float[columns];
        _maxSampleTokens = needs.HasFlag(StatisticsNeeds.Samples) ? maxSampleTokens : 0;
    }

    public void Add(ReadOnlySpan<float> x, int tokens)
    {
        if (_hessianMatrix is not null || _hessianTaken || _joinedSamples is not null)
            throw new InvalidOperationException("statistics are final once the Hessian or the samples were read");
        _hessian?.Add(x, tokens);
        for (int t = 0; t < tokens; t++)
        {
            var row = x.Slice(t * Columns, Columns);
            for (int j = 0; j < Columns; j++)
            {
                float a = MathF.Abs(row[j]);
                _absSum[j] += a;
                _squareSum[j] += (double)a * a;
                if (a > AbsMax[j]) AbsMax[j] = a;
            }
        }
        int keep = Math.Min(tokens, _maxSampleTokens - SampleTokens);
        if (keep > 0)
        {
            _samples.Add(x[..(keep * Columns)].ToArray());
            SampleTokens += keep;
        }
        Tokens += tokens;
    }

    /// <summary>
    /// Makes the statistics those of X·diag(s)⁻¹, after the producer of this input was divided by s (see
    /// <see cref="BlockCompression.ScaleInputChannels"/>): samples and per-channel magnitudes are divided by s,
    /// the Hessian becomes H_ij / (s_i s_j). Statistics are complete once compression starts; nothing is added after.
    /// </summary>
    public void DivideChannels(ReadOnlySpan<float> s)
    {
        if (s.Length != Columns) throw new ArgumentException($"{Columns} channel scales are needed, not {s.Length}", nameof(s));
        foreach (var chunk in _samples)
            for (int offset = 0; offset < chunk.Length; offset += Columns)
                TensorPrimitives.Divide(chunk.AsSpan(offset, Columns), s, chunk.AsSpan(offset, Columns));
        TensorPrimitives.Divide(AbsMax, s, AbsMax);
        for (int j = 0; j < Columns; j++)
        {
            _absSum[j] /= s[j];
            _squareSum[j] /= (double)s[j] * s[j];
        }
        if (_hessian is not null || _hessianMatrix is not null)
        {
            var h = OwnHessian();
            _whitening = null;
            for (int i = 0; i < Columns; i++)
                for (int j = 0; j < Columns; j++) h[(long)i * Columns + j] /= (double)s[i] * s[j];
        }
    }

    /// <summary>
    /// Keeps only input channels <paramref name="kept"/> (in that order), after structured pruning removed the others
    /// from the layers reading this input: magnitudes, samples and the Hessian's rows and columns.
    /// </summary>
    public void KeepChannels(int[] kept)
    {
        int columns = Columns, n = kept.Length;
        float[] Pick(float[] v) => [.. kept.Select(j => v[j])];
        var samples = Samples();
        var narrowed = new float[(long)SampleTokens * n];
        for (int t = 0; t < SampleTokens; t++)
            for (int j = 0; j < n; j++) narrowed[(long)t * n + j] = samples[(long)t * columns + kept[j]];
        _samples.Clear();
        _samples.Add(_joinedSamples = narrowed);
        var absMax = Pick(AbsMax);
        AbsMax = absMax;
        _absSum = [.. kept.Select(j => _absSum[j])];
        _squareSum = [.. kept.Select(j => _squareSum[j])];
        if (_hessian is not null || _hessianMatrix is not null)
        {
            var h = Hessian();
            var sub = new double[(long)n * n];
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++) sub[(long)i * n + j] = h[(long)kept[i] * columns + kept[j]];
            _hessianMatrix = sub;
            _hessianShared = false;
            _whitening = null;
        }
        Columns = n;
    }

    /// <summary>Per input channel mean |x| (AWQ's activation salience s_x).</summary>
    public float[] AbsMean()
    {
        var mean = new float[Columns];
        for (int j = 0; j < Columns; j++) mean[j] = (float)(_absSum[j] / Math.Max(1, Tokens));
        return mean;
    }

    /// <summary>
    /// Per input channel mean x² — the diagonal of GPTQ's H/2, so Σ_j E[x_j²]·(w_j − ŵ_j)² is the output error
    /// ‖(W − Ŵ)X‖²/n without the cross terms. llama.cpp calls this vector an importance matrix (imatrix).
    /// </summary>
    public float[] SquareMean()
    {
        var mean = new float[Columns];
        for (int j = 0; j < Columns; j++) mean[j] = (float)(_squareSum[j] / Math.Max(1, Tokens));
        return mean;
    }

    /// <summary>H = 2/n Σ x xᵀ, [Columns, Columns], computed once in the accumulator's storage (a 7B down_proj's is ~1 GB).</summary>
    public double[] Hessian()
    {
        if (_hessianTaken) throw new InvalidOperationException("the Hessian of this site was handed over with TakeHessian");
        if (_hessianMatrix is not null) return _hessianMatrix;
        _hessianMatrix = (_hessian ?? throw new InvalidOperationException("the Hessian was not requested for this site")).ToHessian();
        _hessian = null;
        return _hessianMatrix;
    }

    /// <summary>
    /// Hands H over to its last user, who may overwrite it (GPTQ factors it in place); the statistics forget it, so
    /// the gigabyte is freed as soon as that user is done instead of at the end of the block.
    /// </summary>
    public double[] TakeHessian()
    {
        var h = OwnHessian();
        _hessianMatrix = null;
        _hessianTaken = true;
        _whitening = null;
        return h;
    }

    /// <summary>
    /// SVD-LLM's whitening of this site's inputs, <see cref="InputTransform.Whitening"/> of <see cref="Hessian"/> at the
    /// relative <paramref name="dampening"/>: factored once and shared by the layers reading the site (q/k/v, gate/up) and
    /// by the copies still sharing H. <c>analyze</c> whitens every layer's spectrum and then tries svd-llm on it, so
    /// without sharing it factored each site's H twice to six times (the Cholesky factorization of a Llama-3.2-1B
    /// down_proj's 8192×8192 H: 9 s on 2 loaded cores).
    /// </summary>
    public WhiteningTransform Whitening(double dampening)
    {
        if (_whitening is { } known && known.Dampening == dampening) return known.Transform;
        var transform = InputTransform.Whitening(Hessian(), Columns, dampening);
        _whitening = (dampening, transform);
        return transform;
    }

    /// <summary>H as an array no copy shares, so it may be changed.</summary>
    private double[] OwnHessian()
    {
        var h = Hessian();
        if (!_hessianShared) return h;
        _hessianShared = false;
        return _hessianMatrix = (double[])h.Clone();
    }

    /// <summary>The sampled input rows, row-major [SampleTokens, Columns]; joined once and shared by every caller (read-only).</summary>
    public float[] Samples()
    {
        if (_joinedSamples is not null) return _joinedSamples;
        var all = new float[(long)SampleTokens * Columns];
        int offset = 0;
        foreach (var chunk in _samples) { chunk.CopyTo(all, offset); offset += chunk.Length; }
        _samples.Clear();
        _samples.Add(all);
        return _joinedSamples = all;
    }
}

/// <summary>Passes a linear layer's inputs to <see cref="SiteStatistics"/> on their way through (calibration only).</summary>
internal sealed class RecordingLinear(Linear inner, SiteStatistics statistics) : Linear(inner.InFeatures, inner.OutFeatures)
{
    public Linear Inner => inner;

    public override void Apply(ReadOnlySpan<float> x, Span<float> y, int n, WorkerPool pool, int threads)
    {
        statistics.Add(x[..(n * InFeatures)], n);
        inner.Apply(x, y, n, pool, threads);
    }
}
