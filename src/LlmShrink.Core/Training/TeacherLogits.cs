using LlmShrink.Kernels;
using LlmShrink.Model;

namespace LlmShrink.Training;

/// <summary>
/// The teacher's logits for a batch, from the inference <see cref="Transformer"/> (so the teacher may be any model
/// LlmShrink runs: a dense folder, a GGUF file, a compressed folder): each sequence runs from position 0 in one batched
/// prefill with an emptied KV cache, writing logits for every position. On request also the final hidden states
/// (the last block's output through the final norm, what lm_head reads), caught by an <see cref="IBlockObserver"/>.
/// </summary>
public sealed class TeacherLogits(Transformer teacher)
{
    private KvCache? _cache;

    public ModelConfig Config => teacher.Config;

    /// <summary>
    /// Logits [batch·seqLen, vocab] of <paramref name="tokens"/> ([batch, seqLen]) into <paramref name="logits"/>, and the
    /// final hidden states [batch·seqLen, hiddenSize] into <paramref name="hidden"/> when it is not null.
    /// </summary>
    public void Compute(ReadOnlySpan<int> tokens, int batch, int seqLen, float[] logits, float[]? hidden = null)
    {
        var c = Config;
        int vocab = c.VocabSize, d = c.HiddenSize;
        if (_cache is null || _cache.Capacity < seqLen) _cache = teacher.NewCache(seqLen);
        var observer = hidden is null ? null : new LastBlockOutput(c.NumLayers - 1);
        teacher.Observer = observer;
        try
        {
            for (int b = 0; b < batch; b++)
            {
                _cache.Clear();
                if (observer is not null) observer.Destination = hidden.AsMemory(b * seqLen * d, seqLen * d);
                teacher.Forward(tokens.Slice(b * seqLen, seqLen), _cache, logits.AsSpan(b * seqLen * vocab, seqLen * vocab));
            }
        }
        finally { teacher.Observer = null; }
        if (hidden is not null) RmsNorm.ApplyRows(hidden.AsSpan(0, batch * seqLen * d), teacher.FinalNorm, hidden.AsSpan(0, batch * seqLen * d), batch * seqLen, c.RmsNormEps);
    }

    /// <summary>Copies the last block's output into <see cref="Destination"/>.</summary>
    private sealed class LastBlockOutput(int lastLayer) : IBlockObserver
    {
        public Memory<float> Destination { get; set; }

        public void BlockInput(int layer, ReadOnlySpan<float> hidden, int tokens) { }

        public void BlockOutput(int layer, ReadOnlySpan<float> hidden, int tokens)
        {
            if (layer == lastLayer) hidden.CopyTo(Destination.Span);
        }
    }
}
