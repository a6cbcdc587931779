namespace LlmShrink.Evaluation;

/// <summary>
/// Picks the next token from logits. Temperature 0 is greedy (argmax). Otherwise the logits are divided by the
/// temperature, softmaxed, and — nucleus sampling (Holtzman et al., 2019) — restricted to the smallest set of most
/// likely tokens whose probabilities add up to at least <c>topP</c>, renormalised, and sampled with a seeded
/// <see cref="Random"/> so a run is reproducible.
/// </summary>
public sealed class Sampler
{
    private readonly float _temperature;
    private readonly float _topP;
    private readonly Random _random;
    private double[] _probabilities = [];
    private int[] _order = [];

    public Sampler(float temperature, float topP, int seed)
    {
        if (!(temperature >= 0) || !float.IsFinite(temperature)) throw new ArgumentOutOfRangeException(nameof(temperature), "temperature must be ≥ 0");
        if (!(topP > 0 && topP <= 1)) throw new ArgumentOutOfRangeException(nameof(topP), "top-p must be in (0, 1]");
        _temperature = temperature;
        _topP = topP;
        _random = new Random(seed);
    }

    public int Sample(ReadOnlySpan<float> logits)
    {
        if (_temperature == 0) return LogSoftmax.ArgMax(logits);

        int n = logits.Length;
        if (_probabilities.Length != n) { _probabilities = new double[n]; _order = new int[n]; }
        var p = _probabilities;
        double max = logits[LogSoftmax.ArgMax(logits)];
        double sum = 0;
        for (int i = 0; i < n; i++) { p[i] = Math.Exp((logits[i] - max) / _temperature); sum += p[i]; }
        // A token with p < (1 − topP)/(n − 1) can never be in the nucleus: even all n − 1 such tokens together
        // hold less than 1 − topP. Dropping them first leaves only a handful of candidates to sort.
        double cutoff = n > 1 ? (1 - _topP) / (n - 1) : 0;
        int candidates = 0;
        for (int i = 0; i < n; i++)
        {
            p[i] /= sum;
            if (p[i] >= cutoff) _order[candidates++] = i;
        }

        // Most likely first (ties by token id, so the order never depends on the sort's stability).
        var order = _order.AsSpan(0, candidates);
        order.Sort((a, b) => p[a] != p[b] ? p[b].CompareTo(p[a]) : a.CompareTo(b));
        int kept = 0;
        double mass = 0;
        while (kept < candidates && mass < _topP) mass += p[order[kept++]];

        double u = _random.NextDouble() * mass;
        double cumulative = 0;
        for (int k = 0; k < kept; k++)
        {
            cumulative += p[_order[k]];
            if (u < cumulative) return _order[k];
        }
        return _order[kept - 1]; // u landed on the rounding gap at the very top
    }
}
