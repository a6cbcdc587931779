using LlmShrink.Formats;
using LlmShrink.Model;
using LlmShrink.Representations;

namespace LlmShrink.Export;

/// <summary>
/// The low-rank compensation of a compressed model (EoRA factors, <see cref="CompensatedRepresentation"/>) read as a LoRA
/// adapter: for each compensated module, A [rank, in] and B [out, rank] such that the module computes base(x) + B·A·x.
/// LoRA runtimes scale B·A by alpha/r; the adapter exports write alpha = r, so the scale is exactly 1.
/// </summary>
public static class CompensationAdapter
{
    /// <summary>One compensated module: its path (e.g. <c>model.layers.0.self_attn.q_proj</c>) and stored factors.</summary>
    public sealed record Module(string Path, StoredTensor A, StoredTensor B)
    {
        public int Rank => (int)A.Shape[0];
        /// <summary>The module's name within its block (<c>q_proj</c>), or <c>lm_head</c>: what PEFT's target_modules match.</summary>
        public string Name => Path[(Path.LastIndexOf('.') + 1)..];
    }

    /// <summary>The compensated modules of <paramref name="model"/>, block by block in module order, then lm_head.</summary>
    public static IReadOnlyList<Module> Find(LoadedModel model)
    {
        var modules = new List<Module>();
        foreach (string path in ModulePaths(model.Config))
            if (LayerRepresentations.Find(model.Weights, path) is CompensatedRepresentation compensated)
            {
                var (a, b) = compensated.Factors(model.Weights, path);
                modules.Add(new Module(path, a, b));
            }
        return modules;
    }

    /// <summary>Every linear module path of the model: the block linears, then lm_head.</summary>
    public static IEnumerable<string> ModulePaths(ModelConfig c) =>
        Enumerable.Range(0, c.NumLayers).SelectMany(layer => LinearRoles.All.Select(role => LinearRoles.ModulePath(layer, role))).Append(TensorNames.LmHeadModule);

    /// <summary>
    /// The compensated modules and their common rank, for an adapter file. A model without any is a one-line error; so are
    /// modules of different ranks, since an adapter scales every module by one alpha/r in llama.cpp (and in vLLM).
    /// </summary>
    public static (IReadOnlyList<Module> Modules, int Rank) Read(LoadedModel model)
    {
        var modules = Find(model);
        if (modules.Count == 0)
            throw ShrinkException.InFile(model.Source, "has no low-rank compensation (lora_A/lora_B factors) to export as an adapter; compress it with an eora modifier first, e.g. --recipe w3g128-gptq-eora32");
        var ranks = modules.Select(m => m.Rank).Distinct().Order().ToList();
        if (ranks.Count > 1)
            throw ShrinkException.InFile(model.Source, $"its modules are compensated at ranks {string.Join(", ", ranks)}; a LoRA adapter file scales every module by one alpha/r, so one rank is needed (use one eora rank in the recipe)");
        return (modules, ranks[0]);
    }
}
