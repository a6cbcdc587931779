using System.Buffers.Binary;
using LlmShrink.Model;

namespace LlmShrink.Formats.Llama2c;

/// <summary>
/// A llama2.c checkpoint (the "legacy" version-0 export read by karpathy/llama2.c run.c): seven little-endian
/// int32 — dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size (negative = separate classifier), seq_len —
/// then float32 arrays, each stacking all layers: token_embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3,
/// rms_final, freq_cis_real, freq_cis_imag, and wcls when not shared. Matrices are row-major [out, in], as in
/// Hugging Face; each layer's slice becomes a tensor pointing into the mapping under its canonical name.
/// </summary>
public static class Llama2cCheckpoint
{
    public const int HeaderBytes = 7 * sizeof(int);

    /// <summary>First int32 of llama2.c's newer exports (version 1/2), the bytes "ak42".</summary>
    private const int VersionedExportMagic = 0x616b3432;

    /// <summary>llama2.c precomputes RoPE tables for this many positions; anything past it is a corrupt header.</summary>
    private const int MaxSeqLen = 1 << 24;

    public static (ModelConfig Config, TensorSet Weights) Open(string path)
    {
        var file = new MappedFile(path);
        var weights = new TensorSet();
        weights.AddFile(file);
        try
        {
            var (config, shared) = ReadHeader(file);
            MapTensors(file, config, shared, weights);
            return (config, weights);
        }
        catch { weights.Dispose(); throw; }
    }

    private static (ModelConfig, bool Shared) ReadHeader(MappedFile file)
    {
        string path = file.Path;
        if (file.Length < HeaderBytes) throw ShrinkException.InFile(path, $"truncated llama2.c checkpoint: {file.Length} bytes, less than the {HeaderBytes}-byte header");
        int Field(int i) => BinaryPrimitives.ReadInt32LittleEndian(file.Span(4 * i, sizeof(int)));
        int dim = Field(0), hiddenDim = Field(1), layers = Field(2), heads = Field(3), kvHeads = Field(4), signedVocab = Field(5), seqLen = Field(6);

        if (dim == VersionedExportMagic)
            throw ShrinkException.InFile(path, "llama2.c versioned export (magic 'ak42') is not supported; export with --version 0 (the legacy float32 format)");
        if (dim <= 0 || hiddenDim <= 0 || layers <= 0 || heads <= 0 || kvHeads <= 0 || signedVocab == 0 || seqLen <= 0 || signedVocab == int.MinValue)
            throw ShrinkException.InFile(path, $"not a llama2.c checkpoint: header values dim={dim} hidden_dim={hiddenDim} n_layers={layers} n_heads={heads} n_kv_heads={kvHeads} vocab_size={signedVocab} seq_len={seqLen} must be positive (vocab_size may be negative)");
        if (dim % heads != 0) throw ShrinkException.InFile(path, $"dim {dim} is not divisible by n_heads {heads}");
        if (seqLen > MaxSeqLen) throw ShrinkException.InFile(path, $"seq_len {seqLen} is implausibly large");

        var config = new ModelConfig
        {
            Architecture = "llama",
            HiddenSize = dim,
            IntermediateSize = hiddenDim,
            NumLayers = layers,
            NumHeads = heads,
            NumKvHeads = kvHeads,
            HeadDim = dim / heads,
            VocabSize = Math.Abs(signedVocab),
            MaxPositions = seqLen,
            RmsNormEps = 1e-5f,      // run.c's rmsnorm
            RopeTheta = 10000f,      // run.c's rope frequencies
            RopeStyle = RopeStyle.Interleaved,
            TiedEmbeddings = signedVocab > 0,
        };
        // Bounds every dimension, so the size arithmetic below cannot overflow a long.
        config.Validate(path);

        long expected = HeaderBytes + sizeof(float) * FloatCount(config, signedVocab > 0);
        if (file.Length != expected)
            throw ShrinkException.InFile(path, $"llama2.c checkpoint is {file.Length} bytes but its header (dim {dim}, hidden_dim {hiddenDim}, {layers} layers, {heads}/{kvHeads} heads, vocab {signedVocab}, seq_len {seqLen}) implies {expected}: " +
                (file.Length < expected ? "truncated file" : "wrong header or not a llama2.c file"));
        return (config, signedVocab > 0);
    }

    private static long FreqCisFloats(ModelConfig c) => (long)c.MaxPositions * c.HeadDim / 2;

    private static long FloatCount(ModelConfig c, bool shared)
    {
        long dim = c.HiddenSize, hidden = c.IntermediateSize, layers = c.NumLayers, kv = c.KvDim, vocab = c.VocabSize;
        return vocab * dim                         // token_embedding
            + layers * dim * 2                     // rms_att, rms_ffn
            + layers * dim * dim * 2               // wq, wo
            + layers * kv * dim * 2                // wk, wv
            + layers * hidden * dim * 3            // w1, w2, w3
            + dim                                  // rms_final
            + 2 * FreqCisFloats(c)                 // freq_cis_real, freq_cis_imag (unused: RoPE is recomputed)
            + (shared ? 0 : vocab * dim);          // wcls
    }

    private static void MapTensors(MappedFile file, ModelConfig c, bool shared, TensorSet weights)
    {
        long cursor = HeaderBytes;
        // Start of the next array of `floats` float32 values, in file order.
        long Next(long floats) { long at = cursor; cursor += floats * sizeof(float); return at; }
        void Add(string name, long offset, params long[] shape) => weights.Add(new StoredTensor(name, shape, TensorType.F32, file, offset));
        // One array stacked over layers: layer i's [rows, cols] slice under its canonical name.
        void PerLayer(string suffix, long rows, long cols)
        {
            long start = Next(c.NumLayers * rows * cols);
            for (int i = 0; i < c.NumLayers; i++)
            {
                long offset = start + i * rows * cols * sizeof(float);
                if (rows == 1) Add(TensorNames.Layer(i, suffix), offset, cols);
                else Add(TensorNames.Layer(i, suffix), offset, rows, cols);
            }
        }

        long dim = c.HiddenSize, hidden = c.IntermediateSize, kv = c.KvDim, vocab = c.VocabSize;
        Add(TensorNames.Embedding, Next(vocab * dim), vocab, dim);
        PerLayer(TensorNames.AttnNorm, 1, dim);
        PerLayer(TensorNames.Q, dim, dim);
        PerLayer(TensorNames.K, kv, dim);
        PerLayer(TensorNames.V, kv, dim);
        PerLayer(TensorNames.O, dim, dim);
        PerLayer(TensorNames.FfnNorm, 1, dim);
        PerLayer(TensorNames.Gate, hidden, dim);  // w1
        PerLayer(TensorNames.Down, dim, hidden);  // w2
        PerLayer(TensorNames.Up, hidden, dim);    // w3
        Add(TensorNames.FinalNorm, Next(dim), dim);
        Next(2 * FreqCisFloats(c));
        if (!shared) Add(TensorNames.LmHead, Next(vocab * dim), vocab, dim);
    }
}
