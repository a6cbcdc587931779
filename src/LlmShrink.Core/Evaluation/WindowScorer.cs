namespace LlmShrink.Evaluation;

/// <summary>
/// Scores evaluation windows one at a time (a model, and optionally a reference fed the very same tokens) and keeps
/// only sums, so an evaluation holds one window whatever the length of the text. Besides the totals it keeps the mean
/// NLL at each position of the window and a histogram of per-token KL, for <c>eval --plot</c>.
/// </summary>
public sealed class WindowScorer
{
    /// <summary>Logit rows held at once (rows × vocab floats): bounds memory for 128k-token vocabularies.</summary>
    private const int MaxLogitFloats = 1 << 24;

    private readonly int _context, _firstScored, _vocab, _rowsPerFeed;
    private readonly PerplexityProtocol _protocol;
    private readonly int? _bos;
    private readonly ILogitModel _model;
    private readonly ILogitModel? _reference;
    private readonly float[] _modelLogits;
    private readonly float[]? _referenceLogits;
    private readonly int[] _window;
    private readonly double[] _nllAtPosition;
    private double _nll, _referenceNll, _kl;
    private long _scored, _sameTop1;

    /// <param name="replaceFirstWithBos">The BOS id written over each window's first token (llama.cpp does this when the
    /// vocabulary adds BOS), or null to leave windows as they are.</param>
    public WindowScorer(int context, PerplexityProtocol protocol, int? replaceFirstWithBos, ILogitModel model, ILogitModel? reference = null)
    {
        if (context < 2) throw new ArgumentOutOfRangeException(nameof(context), "a window needs at least 2 tokens");
        _vocab = model.VocabSize;
        if (reference is not null && reference.VocabSize != _vocab)
            throw new ArgumentException($"vocabularies differ: model {_vocab}, reference {reference.VocabSize}");
        _context = context;
        _protocol = protocol;
        _firstScored = Perplexity.FirstScored(context, protocol);
        _bos = replaceFirstWithBos;
        _model = model;
        _reference = reference;
        _rowsPerFeed = Math.Clamp(MaxLogitFloats / _vocab, 1, context);
        _modelLogits = new float[_rowsPerFeed * _vocab];
        _referenceLogits = reference is null ? null : new float[_rowsPerFeed * _vocab];
        _window = new int[context];
        _nllAtPosition = new double[context];
        KlHistogram = reference is null ? null : new KlHistogram();
    }

    public int Windows { get; private set; }

    /// <summary>Per-token KL(reference ‖ model) counts; null without a reference.</summary>
    public KlHistogram? KlHistogram { get; }

    /// <summary>Mean NLL (nats) of the prediction made at each window position; NaN where nothing is scored.</summary>
    public double[] MeanNllByPosition() =>
        _nllAtPosition.Select((sum, p) => p >= _firstScored && p < _context - 1 && Windows > 0 ? sum / Windows : double.NaN).ToArray();

    /// <summary>Runs one window of exactly <c>context</c> tokens from an empty context and adds its scores.</summary>
    public void Score(ReadOnlySpan<int> tokens, CancellationToken cancellation = default)
    {
        if (tokens.Length != _context) throw new ArgumentException($"a window has {_context} tokens, not {tokens.Length}");
        foreach (int t in tokens)
            if ((uint)t >= (uint)_vocab) throw new ArgumentException($"token id {t} is outside the vocabulary of {_vocab}");
        tokens.CopyTo(_window);
        if (_bos is { } bos) _window[0] = bos;

        _model.Reset();
        _reference?.Reset();
        // The unscored prefix only builds context: no logits are needed for it.
        var prefix = _window.AsSpan(0, _firstScored);
        _model.Feed(prefix, Span<float>.Empty);
        _reference?.Feed(prefix, Span<float>.Empty);

        // The last token of a window predicts nothing that is scored, so it is never run.
        for (int pos = _firstScored; pos < _context - 1; pos += _rowsPerFeed)
        {
            cancellation.ThrowIfCancellationRequested();
            int rows = Math.Min(_rowsPerFeed, _context - 1 - pos);
            var piece = _window.AsSpan(pos, rows);
            _model.Feed(piece, _modelLogits.AsSpan(0, rows * _vocab));
            _reference?.Feed(piece, _referenceLogits.AsSpan(0, rows * _vocab));
            for (int r = 0; r < rows; r++)
            {
                int target = _window[pos + r + 1];
                var row = _modelLogits.AsSpan(r * _vocab, _vocab);
                double nll = LogSoftmax.NegativeLogLikelihood(row, target);
                _nll += nll;
                _nllAtPosition[pos + r] += nll;
                if (_referenceLogits is not null)
                {
                    var refRow = _referenceLogits.AsSpan(r * _vocab, _vocab);
                    _referenceNll += LogSoftmax.NegativeLogLikelihood(refRow, target);
                    double kl = KlDivergence.Compute(refRow, row);
                    _kl += kl;
                    KlHistogram!.Add(kl);
                    if (LogSoftmax.ArgMax(refRow) == LogSoftmax.ArgMax(row)) _sameTop1++;
                }
            }
            _scored += rows;
        }
        Windows++;
    }

    public PerplexityResult Result()
    {
        if (Windows == 0) throw new InvalidOperationException("no window was scored");
        return new PerplexityResult
        {
            Protocol = _protocol,
            Context = _context,
            Windows = Windows,
            ScoredPositions = _scored,
            MeanNll = _nll / _scored,
            ReferenceMeanNll = _reference is null ? null : _referenceNll / _scored,
            MeanKlDivergence = _reference is null ? null : _kl / _scored,
            Top1AgreementPercent = _reference is null ? null : 100.0 * _sameTop1 / _scored,
        };
    }
}
