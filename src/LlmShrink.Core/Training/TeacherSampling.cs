using LlmShrink.Evaluation;
using LlmShrink.Model;

namespace LlmShrink.Training;

/// <summary>
/// Data-free distillation data (LLM-QAT, Liu et al. 2023, §2.1): sequences sampled from the teacher itself. Each
/// sequence is BOS followed by seqLen − 1 tokens drawn one at a time from the teacher's full distribution
/// (temperature 1, no nucleus cut), with the KV cache. One seeded <see cref="Sampler"/> draws all sequences in order,
/// so a seed gives the same sequences on every run and thread count. An EOS drawn mid-sequence is kept and sampling
/// goes on after it, as the teacher's own continuation.
/// </summary>
public static class TeacherSampling
{
    public static int[][] Generate(Transformer teacher, int bosId, int count, int seqLen, int seed,
        Action<int>? onSequence = null, CancellationToken cancellation = default)
    {
        if (count <= 0) throw new ShrinkException($"--teacher-data: generate:N needs N > 0, not {count}");
        if (seqLen < 2) throw new ShrinkException($"--seq-len: must be at least 2, not {seqLen}");
        if (seqLen > teacher.Config.MaxPositions)
            throw new ShrinkException($"--seq-len: {seqLen} exceeds the teacher's context of {teacher.Config.MaxPositions}");
        var sampler = new Sampler(temperature: 1, topP: 1, seed);
        var cache = teacher.NewCache(seqLen);
        var logits = new float[teacher.Config.VocabSize];
        var sequences = new int[count][];
        for (int s = 0; s < count; s++)
        {
            cancellation.ThrowIfCancellationRequested();
            cache.Clear();
            var sequence = sequences[s] = new int[seqLen];
            sequence[0] = bosId;
            for (int i = 1; i < seqLen; i++)
            {
                teacher.Forward(sequence.AsSpan(i - 1, 1), cache, logits);
                sequence[i] = sampler.Sample(logits);
            }
            onSequence?.Invoke(s + 1);
        }
        return sequences;
    }
}
