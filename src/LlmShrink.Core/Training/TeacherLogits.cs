using LlmShrink.Model;

namespace LlmShrink.Training;

/// <summary>
/// The teacher's logits for a batch, from the inference <see cref="Transformer"/> (so the teacher may be any model
/// LlmShrink runs: a dense folder, a GGUF file, a compressed folder): each sequence runs from position 0 in one batched
/// prefill with an emptied KV cache, writing logits for every position.
/// </summary>
public sealed class TeacherLogits(Transformer teacher)
{
    private KvCache? _cache;

    public ModelConfig Config => teacher.Config;

    /// <summary>Logits [batch·seqLen, vocab] of <paramref name="tokens"/> ([batch, seqLen]) into <paramref name="logits"/>.</summary>
    public void Compute(ReadOnlySpan<int> tokens, int batch, int seqLen, float[] logits)
    {
        int vocab = Config.VocabSize;
        if (_cache is null || _cache.Capacity < seqLen) _cache = teacher.NewCache(seqLen);
        for (int b = 0; b < batch; b++)
        {
            _cache.Clear();
            teacher.Forward(tokens.Slice(b * seqLen, seqLen), _cache, logits.AsSpan(b * seqLen * vocab, seqLen * vocab));
        }
    }
}
