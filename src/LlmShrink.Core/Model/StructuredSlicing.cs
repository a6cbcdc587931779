namespace LlmShrink.Model;

/// <summary>
/// Structured pruning's surgery on one block's dense weights (row-major [out, in], as
/// <see cref="Compression.BlockCompression.Weights"/> gives them): removing whole key/value-head groups from attention,
/// or channels from the gated MLP. The smaller block computes exactly what the original computes with the removed
/// heads' o_proj columns (the removed channels' down_proj columns) set to zero, since those are the only paths by which
/// they reach the block's output. Whole heads are contiguous rows in either RoPE row order, so this holds for
/// Hugging Face and GGUF layouts alike; qwen3's q/k norms act on one head's size and are left as they are.
/// Removing whole blocks needs no surgery: keep the others, renumbered (<see cref="ModelConfig.WithLayerShapes"/>).
/// </summary>
public static class StructuredSlicing
{
    /// <summary>One block's attention projections; the biases (qwen2) are null when the model has none.</summary>
    public sealed record AttentionWeights(float[] Q, float[] K, float[] V, float[] O, float[]? QBias = null, float[]? KBias = null, float[]? VBias = null);

    /// <summary>One block's gated MLP: gate and up [intermediate, hidden], down [hidden, intermediate].</summary>
    public sealed record MlpWeights(float[] Gate, float[] Up, float[] Down);

    /// <summary>
    /// Removes key/value heads <paramref name="kvHeads"/> together with the query heads that read them (query head h
    /// belongs to key/value head h / (heads / kvHeads)): their rows of k_proj, v_proj and q_proj (and biases), and
    /// the query heads' columns of o_proj. Returns the weights and the block's new shape.
    /// </summary>
    public static (AttentionWeights Weights, LayerShape Shape) RemoveKvGroups(AttentionWeights weights, LayerShape shape, int headDim, IReadOnlyCollection<int> kvHeads)
    {
        int group = shape.Heads / shape.KvHeads, qDim = shape.Heads * headDim;
        int hidden = Columns(weights.Q, qDim, "q_proj");
        RequireLength(weights.K, shape.KvHeads * headDim * hidden, "k_proj");
        RequireLength(weights.V, shape.KvHeads * headDim * hidden, "v_proj");
        RequireLength(weights.O, hidden * qDim, "o_proj");
        int[] kept = Kept(shape.KvHeads, kvHeads, "key/value heads");
        int[] kvRows = [.. kept.SelectMany(h => Enumerable.Range(h * headDim, headDim))];
        int[] qRows = [.. kept.SelectMany(h => Enumerable.Range(h * group * headDim, group * headDim))];
        var sliced = new AttentionWeights(
            KeepRows(weights.Q, hidden, qRows), KeepRows(weights.K, hidden, kvRows), KeepRows(weights.V, hidden, kvRows),
            KeepColumns(weights.O, qDim, qRows),
            weights.QBias is null ? null : KeepRows(weights.QBias, 1, qRows),
            weights.KBias is null ? null : KeepRows(weights.KBias, 1, kvRows),
            weights.VBias is null ? null : KeepRows(weights.VBias, 1, kvRows));
        return (sliced, shape with { Heads = kept.Length * group, KvHeads = kept.Length });
    }

    /// <summary>Removes MLP channels <paramref name="channels"/>: their rows of gate_proj and up_proj and columns of down_proj.</summary>
    public static (MlpWeights Weights, LayerShape Shape) RemoveChannels(MlpWeights weights, LayerShape shape, IReadOnlyCollection<int> channels)
    {
        int hidden = Columns(weights.Gate, shape.IntermediateSize, "gate_proj");
        RequireLength(weights.Up, shape.IntermediateSize * hidden, "up_proj");
        RequireLength(weights.Down, hidden * shape.IntermediateSize, "down_proj");
        int[] kept = Kept(shape.IntermediateSize, channels, "channels");
        var sliced = new MlpWeights(KeepRows(weights.Gate, hidden, kept), KeepRows(weights.Up, hidden, kept), KeepColumns(weights.Down, shape.IntermediateSize, kept));
        return (sliced, shape with { IntermediateSize = kept.Length });
    }

    /// <summary>The rows <paramref name="rows"/> (in that order) of a row-major matrix of <paramref name="columns"/> columns.</summary>
    public static float[] KeepRows(float[] matrix, int columns, IReadOnlyList<int> rows)
    {
        var result = new float[rows.Count * columns];
        for (int i = 0; i < rows.Count; i++) matrix.AsSpan(rows[i] * columns, columns).CopyTo(result.AsSpan(i * columns, columns));
        return result;
    }

    /// <summary>The columns <paramref name="keep"/> (in that order) of a row-major matrix of <paramref name="columns"/> columns.</summary>
    public static float[] KeepColumns(float[] matrix, int columns, IReadOnlyList<int> keep)
    {
        int rows = matrix.Length / columns;
        var result = new float[rows * keep.Count];
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < keep.Count; j++) result[r * keep.Count + j] = matrix[r * columns + keep[j]];
        return result;
    }

    /// <summary>0 … count − 1 without <paramref name="removed"/>, which must be distinct, in range, and leave at least one.</summary>
    private static int[] Kept(int count, IReadOnlyCollection<int> removed, string what)
    {
        var set = removed.ToHashSet();
        if (set.Count != removed.Count) throw new ArgumentException($"the {what} to remove must be distinct", nameof(removed));
        if (set.Any(i => (uint)i >= (uint)count)) throw new ArgumentOutOfRangeException(nameof(removed), $"the block has {count} {what}");
        if (set.Count == count) throw new ArgumentException($"removing all {count} {what} leaves nothing; remove the block instead", nameof(removed));
        return [.. Enumerable.Range(0, count).Where(i => !set.Contains(i))];
    }

    private static int Columns(float[] matrix, int rows, string name)
    {
        if (rows <= 0 || matrix.Length == 0 || matrix.Length % rows != 0) throw new ArgumentException($"{name} has {matrix.Length} values, not a whole number of rows of the block's shape ({rows} rows)");
        return matrix.Length / rows;
    }

    private static void RequireLength(float[] matrix, long expected, string name)
    {
        if (matrix.Length != expected) throw new ArgumentException($"{name} has {matrix.Length} values, the block's shape implies {expected}");
    }
}
