using LlmShrink.Formats;
using LlmShrink.Formats.Safetensors;
using LlmShrink.Tokenization;

namespace LlmShrink.Model;

/// <summary>Opens a Hugging Face folder: config.json, (sharded) safetensors, tokenizer files.</summary>
public static class HfModelLoader
{
    public static LoadedModel Load(string folder)
    {
        string configPath = Path.Combine(folder, "config.json");
        if (!File.Exists(configPath)) throw ShrinkException.InFile(folder, "not a Hugging Face model folder: config.json is missing");
        var config = HfConfig.Parse(configPath);

        var weights = LoadWeights(folder);
        try
        {
            CheckTensors(config, weights, folder);
            return new LoadedModel
            {
                Source = folder,
                Format = "safetensors",
                Config = config,
                Weights = weights,
                Tokenizer = TokenizerFactory.FromFolder(folder),
            };
        }
        catch { weights.Dispose(); throw; }
    }

    /// <summary>
    /// model.safetensors, else a sharded index, with a compressed folder's compensation factors when it has them; a folder
    /// holding only PyTorch pickles is refused by name.
    /// </summary>
    private static TensorSet LoadWeights(string folder)
    {
        string single = Path.Combine(folder, "model.safetensors");
        if (File.Exists(single)) return WithCompensation(SafetensorsFile.LoadSet(single), folder);
        string index = Path.Combine(folder, SafetensorsIndex.FileName);
        if (File.Exists(index)) return WithCompensation(SafetensorsIndex.Load(index), folder);

        var pickle = Directory.EnumerateFiles(folder, "pytorch_model*.bin").Order(StringComparer.Ordinal).FirstOrDefault();
        if (pickle is not null) throw PickleCheckpoint.Refusal(pickle);
        throw ShrinkException.InFile(folder, $"no weights found (expected model.safetensors or {SafetensorsIndex.FileName})");
    }

    /// <summary>
    /// Adds the factors of <see cref="Representations.CompensatedRepresentation.FileName"/> when the folder has that file: it
    /// lies outside the shards' index so that GPTQ loaders never see it, and holds nothing but lora_A/lora_B factors.
    /// </summary>
    private static TensorSet WithCompensation(TensorSet weights, string folder)
    {
        string path = Path.Combine(folder, Representations.CompensatedRepresentation.FileName);
        if (!File.Exists(path)) return weights;
        try
        {
            var file = SafetensorsFile.Open(path);
            weights.AddFile(file.File);
            foreach (var tensor in file.Tensors)
            {
                if (!Representations.CompensatedRepresentation.IsFactor(tensor.Name))
                    throw ShrinkException.InFile(path, $"tensor '{tensor.Name}' is not a compensation factor (<module>.lora_A.weight or <module>.lora_B.weight)");
                weights.Add(tensor);
            }
            return weights;
        }
        catch { weights.Dispose(); throw; }
    }

    /// <summary>
    /// Every tensor the forward pass reads exists with the shape <paramref name="config"/> implies (canonical names,
    /// [out, in] for linear weights, each block by its own widths). Done once at load so a mismatched checkpoint fails
    /// here with the tensor's name instead of deep inside a matrix multiply. Extra tensors are ignored.
    /// </summary>
    public static void CheckTensors(ModelConfig config, TensorSet weights, string source)
    {
        void Expect(string name, params long[] shape)
        {
            var t = weights.Find(name) ?? throw ShrinkException.InFile(source, $"missing tensor '{name}'");
            if (!t.Shape.AsSpan().SequenceEqual(shape))
                throw ShrinkException.InFile(t.File.Path,
                    $"tensor '{name}' has shape [{string.Join(", ", t.Shape)}] but the model configuration implies [{string.Join(", ", shape)}]");
        }

        long hidden = config.HiddenSize;
        Expect(TensorNames.Embedding, config.VocabSize, hidden);
        Expect(TensorNames.FinalNorm, hidden);
        if (Representations.LayerRepresentations.Find(weights, TensorNames.LmHeadModule) is not null)
            LinearLoader.Check(weights, TensorNames.LmHeadModule, config.VocabSize, config.HiddenSize, source);
        else if (!config.TiedEmbeddings)
            throw ShrinkException.InFile(source, $"missing tensor '{TensorNames.LmHead}' and the embeddings are not tied (tie_word_embeddings is false)");

        for (int i = 0; i < config.NumLayers; i++)
        {
            long q = config.QDimOf(i), kv = config.KvDimOf(i), inter = config.Layer(i).IntermediateSize;
            string L(string suffix) => TensorNames.Layer(i, suffix);
            void Linear(string suffix, long outFeatures, long inFeatures) =>
                LinearLoader.Check(weights, L(suffix)[..^".weight".Length], (int)outFeatures, (int)inFeatures, source);
            Expect(L(TensorNames.AttnNorm), hidden);
            Linear(TensorNames.Q, q, hidden);
            Linear(TensorNames.K, kv, hidden);
            Linear(TensorNames.V, kv, hidden);
            Linear(TensorNames.O, hidden, q);
            if (config.AttentionBias)
            {
                Expect(L(TensorNames.QBias), q);
                Expect(L(TensorNames.KBias), kv);
                Expect(L(TensorNames.VBias), kv);
            }
            if (config.QkNorm)
            {
                Expect(L(TensorNames.QNorm), config.HeadDim);
                Expect(L(TensorNames.KNorm), config.HeadDim);
            }
            Expect(L(TensorNames.FfnNorm), hidden);
            Linear(TensorNames.Gate, inter, hidden);
            Linear(TensorNames.Up, inter, hidden);
            Linear(TensorNames.Down, hidden, inter);
        }
    }
}
