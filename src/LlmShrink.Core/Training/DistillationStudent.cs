using LlmShrink.Compression.Quantization;
using LlmShrink.Formats;
using LlmShrink.Model;
using LlmShrink.Representations;

namespace LlmShrink.Training;

/// <summary>
/// A student checkpoint (a folder this project wrote, or any dense Hugging Face folder) as a <see cref="TrainableModel"/>
/// whose pruning survives training and whose quantized layers train through fake quantization. Detection of a pruned
/// layer: a dense block linear or lm_head whose weight holds at least <see cref="PrunedZeroFraction"/> exact zeros is taken
/// as pruned, and exactly its zeros become the <see cref="Parameter.Mask"/> (<see cref="Parameter.MaskZeros"/>). This reads
/// the weights alone, so it covers every pruning method and pattern (unstructured, N:M) and any folder, without trusting a
/// recipe; a dense float model has essentially no exact zeros (a trained weight lands on 0.0 with probability ~2⁻²³ per
/// value), so 5 % cannot be met by chance, while every pruning preset removes far more (50 %).
/// A GPTQ-packed layer (GPTQ, RTN and AWQ presets) becomes a <see cref="FakeQuantization"/> of its stored codes and grids,
/// its latent weight the stored codes less zero points; no mask is looked for there (the zero code makes many exact zeros at 3 bits).
/// A low-rank module with float factors (<see cref="LowRankRepresentation"/>: svd, asvd, svd-llm presets) becomes a
/// <see cref="Parameter.Factored"/> layer whose factors U and V train (<see cref="LowRankAdapter"/>, s = 1) and are written
/// back in the type they were read in; quantized factors are refused.
/// Other packed modules (W8A8, ggml blocks, 2:4-sparse 4-bit, an EoRA compensation) are refused.
/// </summary>
public static class DistillationStudent
{
    public const double PrunedZeroFraction = 0.05;

    /// <summary>
    /// The trainable student with masks on its pruned layers, fake quantization (<paramref name="quantizedTraining"/>)
    /// on its GPTQ-packed ones, whose latent weights (in grid steps) learn at <paramref name="latentRateScale"/> times the
    /// schedule's rate, and trainable factors on its low-rank ones; returns the masked, quantized and factored parameters' names too.
    /// </summary>
    public static (TrainableModel Model, IReadOnlyList<string> Masked, IReadOnlyList<string> Quantized, IReadOnlyList<string> Factored) Load(
        LoadedModel student, QuantizedTraining quantizedTraining, float latentRateScale)
    {
        var c = student.Config;
        var packed = new Dictionary<string, FakeQuantization>(StringComparer.Ordinal);
        var factored = new Dictionary<string, Parameter>(StringComparer.Ordinal);
        foreach (string module in LinearModules(c))
            switch (LayerRepresentations.Find(student.Weights, module))
            {
                case GptqRepresentation:
                    packed[module + ".weight"] = new FakeQuantization(module, GptqRepresentation.Read(student.Weights, module), quantizedTraining);
                    break;
                case LowRankRepresentation:
                    factored[module + ".weight"] = Factored(student, module);
                    break;
                case { IsDense: false } representation:
                    throw new ShrinkException($"distill: module {module} of {student.Source} is {representation.Name}-packed; training is built for dense, pruned, GPTQ-packed and low-rank students only");
            }
        var model = TrainableModel.FromLoaded(student, name => packed.TryGetValue(name, out var q) ? q.InitialLatent() : null,
            name => factored.GetValueOrDefault(name));
        var masked = new List<string>();
        var quantized = new List<string>();
        foreach (var p in MaskableParameters(model).Where(p => p.HasValue))
        {
            if (packed.TryGetValue(p.Name, out var q))
            {
                p.Quantize(q);
                p.RateScale = latentRateScale;
                quantized.Add(p.Name);
                continue;
            }
            long zeros = p.Value.LongCount(v => v == 0);
            if (zeros < PrunedZeroFraction * p.Value.Length) continue;
            p.MaskZeros();
            masked.Add(p.Name);
        }
        return (model, masked, quantized, [.. factored.Keys]);
    }

    /// <summary>
    /// A low-rank module's float factors U [out, rank] and V [rank, in] as a factored layer computing U·V (B = U, A = V,
    /// s = 1), written back under the same names and in the same type (<see cref="LowRankAdapter.StoredType"/>).
    /// </summary>
    private static Parameter Factored(LoadedModel student, string module)
    {
        Parameter Factor(string suffix)
        {
            string name = module + suffix + ".weight";
            var t = student.Weights.Find(name);
            if (t is null || t.Type is not (TensorType.F32 or TensorType.F16 or TensorType.BF16) || t.Shape.Length != 2)
                throw ShrinkException.InFile(student.Source, $"low-rank factor {module + suffix} is not a float matrix (quantized factors, bits: 4|8?); distill trains F16, BF16 or F32 factors only");
            return new Parameter(name, t.ToFloatArray(), (int)t.Shape[0], (int)t.Shape[1]);
        }
        var u = Factor(LowRankRepresentation.U);
        var v = Factor(LowRankRepresentation.V);
        LowRankRepresentation.Instance.Shape(student.Weights, module); // checks that the ranks agree, naming the file
        var type = student.Weights.Get(module + LowRankRepresentation.U + ".weight").Type;
        return Parameter.Factored(module + ".weight", new LowRankAdapter(v, u, 1) { StoredType = type });
    }

    /// <summary>Module paths of the block linears and lm_head (tied embeddings have no lm_head module).</summary>
    private static IEnumerable<string> LinearModules(ModelConfig c)
    {
        string[] suffixes = [TensorNames.Q, TensorNames.K, TensorNames.V, TensorNames.O, TensorNames.Gate, TensorNames.Up, TensorNames.Down];
        for (int l = 0; l < c.NumLayers; l++)
            foreach (string suffix in suffixes)
                yield return TensorNames.Layer(l, suffix)[..^".weight".Length];
        if (!c.TiedEmbeddings) yield return TensorNames.LmHeadModule;
    }

    /// <summary>The parameters a recipe can prune: the block linears and an untied lm_head (never embeddings or norms).</summary>
    private static IEnumerable<Parameter> MaskableParameters(TrainableModel model)
    {
        foreach (var b in model.Blocks)
            foreach (var p in new[] { b.Q, b.K, b.V, b.O, b.Gate, b.Up, b.Down }) yield return p;
        if (!model.Config.TiedEmbeddings) yield return model.LmHead;
    }
}
