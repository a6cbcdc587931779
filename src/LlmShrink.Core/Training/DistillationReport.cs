using System.Globalization;
using System.Text;

namespace LlmShrink.Training;

/// <summary>What a distillation run did, as the output folder's report.md: the command, the setup, the loss curve.</summary>
public sealed record DistillationReport(string Command, string Teacher, string Student, string Data, DistillationOptions Options,
    IReadOnlyList<string> Masked, IReadOnlyList<string> Quantized, QuantizedTraining QuantizedTraining, IReadOnlyList<double> Losses, IReadOnlyList<float> Rates, TimeSpan Elapsed)
{
    /// <summary>Low-rank modules whose factors trained.</summary>
    public IReadOnlyList<string> Factored { get; init; } = [];
    /// <summary>LoRA's settings when only adapters trained, and how many modules had one.</summary>
    public LoraSettings? Lora { get; init; }
    public int Adapted { get; init; }

    /// <summary>The loss at every <paramref name="every"/>-th step and at the last, and the loss of the first step.</summary>
    public void Write(string path, int every)
    {
        var o = Options;
        var i = CultureInfo.InvariantCulture;
        var md = new StringBuilder();
        md.AppendLine("# LlmShrink distillation report").AppendLine();
        md.AppendLine("| | |").AppendLine("|---|---|");
        md.AppendLine(i, $"| command | `{Command}` |");
        md.AppendLine(i, $"| teacher | `{Teacher}` |");
        md.AppendLine(i, $"| student | `{Student}` |");
        md.AppendLine(i, $"| data | {Data} |");
        string divergence = o.Loss.Kind switch
        {
            Divergence.ForwardKl => "forward KL(p‖q)",
            Divergence.ReverseKl => "reverse KL(q‖p)",
            _ => $"generalized JSD, β = {o.Loss.Beta}",
        };
        md.AppendLine(i, $"| loss | {divergence} over the vocabulary at every position, temperature {o.Loss.Temperature}{(o.HiddenMse > 0 ? $", plus {o.HiddenMse} × MSE of the final hidden states" : "")} |");
        md.AppendLine(i, $"| steps | {Losses.Count} of {o.Steps}, {o.Batch} × {o.SeqLen} tokens each |");
        md.AppendLine(i, $"| optimizer | AdamW, peak rate {o.Lr:G3}, {Math.Min(o.Warmup, o.Steps - 1)} warmup steps then cosine to {o.Lr / 10:G3}, weight decay {o.WeightDecay}, gradient norm clipped at {o.ClipNorm} |");
        string threshold = $"{DistillationStudent.PrunedZeroFraction:P0}";
        md.AppendLine(i, $"| pruning masks kept | {(Masked.Count == 0 ? $"none (no block linear or lm_head with ≥ {threshold} exact zeros)" : $"{Masked.Count} tensors (the exact zeros of every block linear / lm_head with ≥ {threshold} zeros)")} |");
        if (Quantized.Count > 0)
            md.AppendLine(i, $"| quantized layers | {Quantized.Count} tensors trained through fake quantization, {(QuantizedTraining == QuantizedTraining.Scales ? "scales only, codes and zero points frozen (PEQA)" : $"latent weights in grid steps (peak rate {o.LatentLr:G3}) and scales, and zero points where the grid is asymmetric (straight-through round)")}, re-packed as GPTQ with their stored bits, groups and symmetry; embeddings, norms and float layers train as usual |");
        if (Factored.Count > 0)
            md.AppendLine(i, $"| low-rank layers | {Factored.Count} modules trained their factors U and V (SVD-LLM's parameter update, by distillation), written back low-rank in the type they were read in |");
        if (Lora is { } lora)
            md.AppendLine(i, $"| LoRA | rank {lora.Rank}, α {lora.Alpha:G} (scale {lora.Scale:G}) on {Adapted} block linears, everything else frozen; {(lora.Keep ? "adapters kept un-merged in compensation.safetensors (lora_B holds the scale)" : "merged into the weights (masked on pruned layers, which keep every zero)")} |");
        md.AppendLine(i, $"| time | {Elapsed.TotalSeconds:F1} s |");
        md.AppendLine().AppendLine("## Loss").AppendLine();
        md.AppendLine("The loss on each step's own training batch, before that step's update: the mean divergence per position (plus the weighted hidden-state MSE when `--hidden-mse` is on).").AppendLine();
        md.AppendLine("| step | loss | learning rate |").AppendLine("|---:|---:|---:|");
        for (int s = 0; s < Losses.Count; s++)
            if (s == 0 || (s + 1) % every == 0 || s + 1 == Losses.Count)
                md.AppendLine(i, $"| {s + 1} | {Losses[s]:F4} | {Rates[s]:E2} |");
        File.WriteAllText(path, md.ToString());
    }
}
