namespace LlmShrink.Training;

/// <summary>
/// LoRA recovery (Hu et al. 2021) of a student: every block linear gets an adapter s·B·A (<see cref="LowRankAdapter"/>)
/// and the whole base model is frozen — block linears, embeddings, norms, lm_head — as PEFT's default LoraConfig freezes
/// it and as LLM-Pruner's recovery stage (Ma et al. 2023, §3.3) targets q, k, v, o, gate, up and down. lm_head and the
/// embeddings get none: they are not what structured or unstructured pruning removes, and an adapter on lm_head
/// (vocab × hidden) would be the largest of all for the least-pruned matrix. Per-block widths (ffn-20, a dropped block)
/// give each adapter its own module's shape.
/// </summary>
public static class LoraAdapters
{
    /// <summary>The settings' one-line errors that need no model: a rank or alpha that is not positive.</summary>
    public static void Validate(LoraSettings settings)
    {
        if (settings.Rank <= 0) throw new ShrinkException($"--lora-rank: must be positive (got {settings.Rank})");
        if (!(settings.Alpha > 0) || !float.IsFinite(settings.Alpha)) throw new ShrinkException($"--lora-alpha: must be positive (got {settings.Alpha})");
    }

    /// <summary>
    /// Attaches adapters of <paramref name="settings"/>' rank and scale to every block linear of <paramref name="model"/>
    /// (A drawn from <paramref name="seed"/>) and freezes everything else; returns the adapted module paths. A rank above
    /// min(in, out) of some module, a fake-quantized or factored module is a one-line error.
    /// </summary>
    public static IReadOnlyList<string> Attach(TrainableModel model, LoraSettings settings, int seed)
    {
        Validate(settings);
        int rank = settings.Rank;
        var linears = model.Blocks.SelectMany(b => new[] { b.Q, b.K, b.V, b.O, b.Gate, b.Up, b.Down }).ToList();
        foreach (var p in linears)
        {
            string module = p.Name[..^".weight".Length];
            if (p.Quantization is not null)
                throw new ShrinkException($"--lora-rank: module {module} is GPTQ-packed; LoRA on a quantized student is not supported (distill it without --lora-rank: its quantized layers train through fake quantization)");
            if (!p.HasValue)
                throw new ShrinkException($"--lora-rank: module {module} is low-rank factored; its factors train themselves (distill it without --lora-rank)");
            if (rank > Math.Min(p.Rows, p.Columns))
                throw new ShrinkException($"--lora-rank {rank}: larger than min(in, out) = {Math.Min(p.Rows, p.Columns)} of module {module} [{p.Rows}, {p.Columns}]");
        }
        foreach (var p in model.Parameters) p.Freeze();
        var random = new Random(seed);
        var adapted = new List<string>();
        foreach (var p in linears)
        {
            string module = p.Name[..^".weight".Length];
            p.Adapt(LowRankAdapter.Initialize(module, p.Rows, p.Columns, rank, settings.Alpha, random));
            adapted.Add(module);
        }
        return adapted;
    }
}
