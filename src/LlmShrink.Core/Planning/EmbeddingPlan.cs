using LlmShrink.Compression;
using LlmShrink.Export;
using LlmShrink.Formats;
using LlmShrink.Model;
using LlmShrink.Representations;

namespace LlmShrink.Planning;

/// <summary>One type the token embeddings can take in the GGUF file.</summary>
/// <param name="Type">The type asked for (<c>--embedding-type</c>).</param>
/// <param name="Stored">The type the export writes for it (<see cref="GgufExporter.ChooseType"/>: a row length that is not a whole number of blocks falls back).</param>
/// <param name="Bytes">The tensor's data bytes in <paramref name="Stored"/>, padded to GGUF's 32-byte alignment.</param>
/// <param name="Kl">Mean KL per held-back token when the embeddings alone take <paramref name="Stored"/>.</param>
public sealed record EmbeddingOption(TensorType Type, TensorType Stored, long Bytes, double Kl);

/// <summary>
/// The token embeddings planned with the layers (<c>auto --format gguf --embedding-type auto</c>). llama.cpp's mixes give
/// token_embd a fixed type (Q4_K in Q4_K_M, Q2_K in Q2_K), and on a small model it is a large share of the file (an eighth
/// of tinylit-8m's weights; a fifth of Llama-3.2-1B's). Each type of <see cref="Types"/> is measured end to end, with
/// the rows rounded exactly as the export writes them (no importance: llama.cpp's imatrix has none for a lookup table)
/// and every layer float. The choice is then exact on top of the layers' knapsack: for each type, the best layer plan in
/// the bytes left, and the type whose sum of predicted KLs is least (or, under a KL budget, whose total bytes are).
/// </summary>
public static class EmbeddingPlan
{
    /// <summary>The types tried: those of the default GGUF menu.</summary>
    public static readonly TensorType[] Types = [TensorType.Q2_K, TensorType.Q3_K, TensorType.Q4_K, TensorType.Q5_K, TensorType.Q6_K, TensorType.Q8_0];

    private const int Alignment = 32;

    /// <summary>The one type the user gave: its bytes, KL not measured (0; a constant does not change the layers' plan).</summary>
    public static EmbeddingOption Given(LoadedModel model, TensorType type)
    {
        var table = model.Weights.Get(TensorNames.Embedding);
        var stored = GgufExporter.ChooseType(table.Shape, type);
        return new EmbeddingOption(type, stored, Bytes(table, stored), 0);
    }

    /// <summary>
    /// Every type's bytes and held-back KL on <paramref name="transformer"/> (the float model, left as it was). With tied
    /// embeddings the table is lm_head too, so lm_head runs on the rounded table as well, as llama.cpp runs token_embd.
    /// </summary>
    public static IReadOnlyList<EmbeddingOption> Measure(LoadedModel model, Transformer transformer, HeldBackKl kl,
        IProgress<PipelineProgress>? progress = null, CancellationToken cancel = default)
    {
        var table = model.Weights.Get(TensorNames.Embedding);
        int rows = checked((int)table.Rows), columns = checked((int)table.Columns);
        bool tied = model.Config.TiedEmbeddings;
        var head = transformer.LmHead;
        var options = new List<EmbeddingOption>();
        foreach (var (asked, stored) in Types.Select(t => (Asked: t, Stored: GgufExporter.ChooseType(table.Shape, t))).DistinctBy(t => t.Stored))
        {
            cancel.ThrowIfCancellationRequested();
            progress?.Report(new PipelineProgress(model.Config.NumLayers - 1, model.Config.NumLayers, $"measuring the embeddings as {stored}"));
            int rowBytes = checked((int)TensorTypes.ByteCount(stored, columns));
            var encoded = Encode(table, stored, rowBytes);
            transformer.EmbeddingRows = (token, destination) => TensorDecoding.DecodeRow(stored, encoded.AsSpan(token * rowBytes, rowBytes), destination);
            if (tied)
                transformer.LmHead = TensorTypes.IsBlockQuantized(stored) ? GgmlTypeRepresentation.Build(stored, encoded, rows, columns, null)
                    : HalfWidthLayers.Encode(TensorType.F16, GgmlTypeRepresentation.Decode(stored, encoded, rows, columns), rows, columns, null); // the F16 fallback
            try { options.Add(new EmbeddingOption(asked, stored, Bytes(table, stored), kl.Measure(transformer, cancel))); }
            finally
            {
                transformer.EmbeddingRows = null;
                transformer.LmHead = head;
            }
        }
        return options;
    }

    /// <summary>The table as the export writes it in <paramref name="type"/> (each row encoded from its stored values).</summary>
    private static byte[] Encode(StoredTensor table, TensorType type, int rowBytes)
    {
        int columns = checked((int)table.Columns);
        var encoded = new byte[table.Rows * rowBytes];
        Parallel.For(0, table.Rows, () => new float[columns], (row, _, scratch) =>
        {
            table.DequantizeRow(row, scratch);
            TensorEncoding.EncodeRow(type, scratch, encoded.AsSpan(checked((int)(row * rowBytes)), rowBytes));
            return scratch;
        }, _ => { });
        return encoded;
    }

    private static long Bytes(StoredTensor table, TensorType stored) =>
        (table.Rows * TensorTypes.ByteCount(stored, checked((int)table.Columns)) + Alignment - 1) / Alignment * Alignment;

    /// <summary>The least predicted loss of layers and embeddings together within <paramref name="budget"/> bytes for both (null: none fits).</summary>
    public static (Selection Layers, EmbeddingOption Embedding)? WithinCost(MultipleChoiceKnapsack layers, IReadOnlyList<EmbeddingOption> options, long budget)
    {
        (Selection Layers, EmbeddingOption Embedding)? best = null;
        foreach (var option in options)
            if (layers.WithinCost(budget - option.Bytes) is { } plan && (best is not { } b || plan.Loss + option.Kl < b.Layers.Loss + b.Embedding.Kl))
                best = (plan, option);
        return best;
    }

    /// <summary>The fewest bytes of layers and embeddings together whose predicted loss is at most <paramref name="maxLoss"/> (null: none).</summary>
    public static (Selection Layers, EmbeddingOption Embedding)? WithinLoss(MultipleChoiceKnapsack layers, IReadOnlyList<EmbeddingOption> options, double maxLoss)
    {
        (Selection Layers, EmbeddingOption Embedding)? best = null;
        foreach (var option in options.Where(o => o.Kl <= maxLoss))
            if (layers.WithinLoss(maxLoss - option.Kl) is { } plan && (best is not { } b || plan.Cost + option.Bytes < b.Layers.Cost + b.Embedding.Bytes))
                best = (plan, option);
        return best;
    }
}
