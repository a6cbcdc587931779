using LlmShrink.Evaluation;
using LlmShrink.Model;

namespace LlmShrink.Planning;

/// <summary>
/// Mean KL(original ‖ model) per token on the held-back windows: the reference model's logits are computed once,
/// then any model with the same vocabulary is compared against them (each window run from an empty context).
/// </summary>
public sealed class HeldBackKl
{
    private readonly int[][] _windows;
    private readonly float[][] _reference;
    private readonly int _vocab;

    public HeldBackKl(int[][] windows, Transformer reference)
    {
        _windows = windows;
        _vocab = reference.Config.VocabSize;
        _reference = [.. windows.Select(w => Logits(reference, w))];
    }

    public int Tokens => _windows.Sum(w => w.Length);

    public double Measure(Transformer model, CancellationToken cancel = default)
    {
        if (model.Config.VocabSize != _vocab) throw new ArgumentException($"vocabularies differ: {model.Config.VocabSize} vs {_vocab}", nameof(model));
        double sum = 0;
        for (int s = 0; s < _windows.Length; s++)
        {
            cancel.ThrowIfCancellationRequested();
            var logits = Logits(model, _windows[s]);
            for (int t = 0; t < _windows[s].Length; t++)
                sum += KlDivergence.Compute(_reference[s].AsSpan(t * _vocab, _vocab), logits.AsSpan(t * _vocab, _vocab));
        }
        return sum / Tokens;
    }

    private static float[] Logits(Transformer model, int[] window)
    {
        var logits = new float[window.Length * model.Config.VocabSize];
        model.Forward(window, model.NewCache(window.Length), logits);
        return logits;
    }
}
