using System.Buffers.Binary;
using System.Globalization;
using LlmShrink.Formats;
using LlmShrink.Representations;

namespace LlmShrink.Export;

/// <summary>
/// Writes a compressed module (<see cref="ScaledIntegerMatrix"/>: w = s·n, n a small integer) into ggml blocks so the
/// integers the method chose survive. For the 32-element types each block of 32 columns in which every weight shares
/// one scale s (always the case for group sizes 32, 64, 128 and per-channel grids without act-order, since groups are
/// whole 32-column runs) is built directly:
///   Q4_0  d = ±s, q = ±n + 8   (w = d·(q − 8)),  when every ±n ∈ [−8, 7]
///   Q5_0  d = ±s, q = ±n + 16  (w = d·(q − 16)), when every ±n ∈ [−16, 15]
///   Q8_0  d = ±s, q = ±n       (w = d·q),        when every ±n ∈ [−128, 127]
///   Q4_1  d = ±s, q = ±n − k, m = ±s·k (w = d·q + m), for an integer k putting every q in [0, 15] (Q5_1: [0, 31])
/// d and m are fp16 in the block. A GPTQ scale is already fp16 and s·k (11 mantissa bits times |k| ≤ 255) is exact in
/// float32, so the block decodes to exactly s·n unless s·k is not an fp16 number: k is then chosen to make it one, and
/// when no k does, m is rounded, which moves the whole block by at most half an fp16 ulp of |m| ≤ 15·s (Q4_1), i.e.
/// |Δw| ≤ 15·s·2⁻¹¹ &lt; s/136. A W8A8 row scale is float32, so its blocks are not exact (d rounds to fp16).
/// Every block is also encoded by llama.cpp's reference quantizer from the dequantized weights (the re-fit), and the
/// candidate with the smaller squared error is kept — the construction whenever it is exact. Blocks with several
/// scales (act-order, where a block mixes groups) and levels outside the type's range therefore get the re-fit; so do
/// K-quant and float targets, whole rows at a time. The error objective is GPTQ's when the compressed folder recorded
/// the importance of the layer's input columns (importance.safetensors: mean x_j² of the calibration inputs, the
/// diagonal of the Hessian X·Xᵀ/n): Σ_j E[x_j²]·(w_j − ŵ_j)², the output error ‖(W − Ŵ)X‖² without its cross terms,
/// which is what llama.cpp's importance matrix weights. The same importance serves every row (it belongs to input
/// columns, so the Q/K row permutation leaves it alone). Without it the objective is the plain squared error of the
/// weights. Each encoded row is decoded again and compared with the source to count exact blocks.
/// </summary>
public static class GptqGgufMapping
{
    /// <summary>
    /// The type an 8-bit module is written as: Q8_0 when <paramref name="requested"/> is a block type (writing the
    /// method's 8-bit choice at 4–6 bits would discard it); float targets and lower-bit modules take the request.
    /// </summary>
    public static TensorType TargetType(int bits, TensorType requested) =>
        bits == 8 && TensorTypes.IsBlockQuantized(requested) ? TensorType.Q8_0 : requested;

    /// <summary>
    /// Writes <paramref name="source"/>'s rows as <paramref name="type"/>; output row r is source row <paramref name="sourceRow"/>(r).
    /// <paramref name="importance"/> (per input column, or null) weights the re-fits' error.
    /// </summary>
    public static void Write(Stream output, ScaledIntegerMatrix source, Func<long, long>? sourceRow, MappedLayer layer, float[]? importance = null)
    {
        var (type, tally) = (layer.Type, layer.Counts);
        layer.From = source.Description;
        int columns = source.Columns;
        if (importance is not null && importance.Length != columns)
            throw new ArgumentException($"{columns} importance weights are needed, not {importance.Length}", nameof(importance));
        layer.ImportanceWeighted = importance is not null;
        int rowBytes = checked((int)TensorTypes.ByteCount(type, columns));
        int batchRows = Math.Clamp((4 << 20) / rowBytes, 1, source.Rows);
        var buffer = new byte[(long)batchRows * rowBytes];
        var rowTallies = new MappedLayer.Tally[batchRows];
        for (int first = 0; first < source.Rows; first += batchRows)
        {
            int count = Math.Min(batchRows, source.Rows - first), start = first;
            Parallel.For(0, count, () => new RowScratch(columns), (i, _, scratch) =>
            {
                int row = (int)(sourceRow?.Invoke(start + i) ?? start + i);
                source.Row(row, scratch.Scale, scratch.Level);
                rowTallies[i] = new MappedLayer.Tally();
                EncodeRow(type, scratch, importance, buffer.AsSpan(i * rowBytes, rowBytes), rowTallies[i]);
                return scratch;
            }, _ => { });
            for (int i = 0; i < count; i++) tally.Add(rowTallies[i]);
            output.Write(buffer, 0, count * rowBytes);
        }
    }

    private sealed class RowScratch(int columns)
    {
        public readonly float[] Scale = new float[columns], Value = new float[columns], Decoded = new float[columns];
        public readonly int[] Level = new int[columns];
    }

    private static void EncodeRow(TensorType type, RowScratch s, float[]? importance, Span<byte> destination, MappedLayer.Tally tally)
    {
        int columns = s.Scale.Length;
        for (int c = 0; c < columns; c++) s.Value[c] = s.Scale[c] * s.Level[c];
        int blockElements = TensorTypes.BlockElements(type);
        var refitBlocks = new bool[columns / blockElements]; // small: one flag per block of the row
        if (BlockTypes.Contains(type))
        {
            int blockBytes = TensorTypes.BlockBytes(type);
            Span<byte> built = stackalloc byte[blockBytes], refit = stackalloc byte[blockBytes];
            Span<float> decoded = stackalloc float[32];
            for (int b = 0; b < columns / 32; b++)
            {
                var value = s.Value.AsSpan(32 * b, 32);
                var scale = s.Scale.AsSpan(32 * b, 32);
                var weight = importance is null ? Ones : importance.AsSpan(32 * b, 32);
                GgmlQuantizers.Quantize(type, value, refit, importance is null ? default : weight);
                double refitError = GgmlQuantizers.WeightedError(type, refit, value, weight, decoded);
                bool oneScale = !scale.ContainsAnyExcept(scale[0]);
                refitBlocks[b] = !(oneScale && Construct(type, scale[0], s.Level.AsSpan(32 * b, 32), built) && GgmlQuantizers.WeightedError(type, built, value, weight, decoded) <= refitError);
                (refitBlocks[b] ? refit : built).CopyTo(destination.Slice(b * blockBytes, blockBytes));
            }
        }
        else
        {
            if (importance is not null && GgmlQuantizers.CanEncode(type)) GgmlQuantizers.Quantize(type, s.Value, destination, importance);
            else TensorEncoding.EncodeRow(type, s.Value, destination);
            refitBlocks.AsSpan().Fill(true);
        }

        TensorDecoding.DecodeRow(type, destination, s.Decoded);
        for (int b = 0; b < refitBlocks.Length; b++)
        {
            bool exact = true;
            for (int c = b * blockElements; c < (b + 1) * blockElements; c++)
            {
                double delta = (double)s.Decoded[c] - s.Value[c];
                if (delta != 0) exact = false;
                tally.AddElement(delta, s.Value[c], importance?[c] ?? 1);
            }
            tally.AddBlock(exact, refitBlocks[b]);
        }
    }

    /// <summary>The 32-element types a block can be built for directly.</summary>
    private static readonly TensorType[] BlockTypes = [TensorType.Q4_0, TensorType.Q4_1, TensorType.Q5_0, TensorType.Q5_1, TensorType.Q8_0];

    /// <summary>The unweighted error's weights (one block).</summary>
    private static readonly float[] Ones = Enumerable.Repeat(1f, 32).ToArray();

    /// <summary>Builds the block w_j = s·n_j directly (see the class summary); false when the levels do not fit the type.</summary>
    private static bool Construct(TensorType type, float s, ReadOnlySpan<int> n, Span<byte> block)
    {
        Span<int> q = stackalloc int[32];
        switch (type)
        {
            case TensorType.Q4_0:
            case TensorType.Q5_0:
            case TensorType.Q8_0:
                {
                    int offset = type switch { TensorType.Q4_0 => 8, TensorType.Q5_0 => 16, _ => 0 };
                    int low = type == TensorType.Q8_0 ? -128 : 0, high = type == TensorType.Q8_0 ? 127 : 2 * offset - 1;
                    foreach (int sign in (ReadOnlySpan<int>)[1, -1])
                    {
                        bool fits = true;
                        for (int j = 0; j < 32 && fits; j++)
                        {
                            q[j] = sign * n[j] + offset;
                            fits = q[j] >= low && q[j] <= high;
                        }
                        if (!fits) continue;
                        GgmlQuantizers.WriteFp16(block, 0, sign * s);
                        if (type == TensorType.Q8_0) for (int j = 0; j < 32; j++) block[2 + j] = (byte)(sbyte)q[j];
                        else if (type == TensorType.Q4_0) GgmlQuantizers.PackNibbles(q, block.Slice(2, 16));
                        else GgmlQuantizers.PackFiveBits(q, block.Slice(2, 4), block.Slice(6, 16));
                        return true;
                    }
                    return false;
                }
            case TensorType.Q4_1:
            case TensorType.Q5_1:
                {
                    int maxQ = type == TensorType.Q4_1 ? 15 : 31;
                    int bestSign = 0, bestK = 0;
                    float bestRounding = float.PositiveInfinity;
                    foreach (int sign in (ReadOnlySpan<int>)[1, -1])
                    {
                        int min = int.MaxValue, max = int.MinValue;
                        foreach (int level in n) { min = Math.Min(min, sign * level); max = Math.Max(max, sign * level); }
                        // q = sign·n − k ∈ [0, maxQ] for every element ⇔ k ∈ [max − maxQ, min]; prefer an m that fp16 holds exactly.
                        for (int k = min; k >= max - maxQ && bestRounding > 0; k--)
                        {
                            float m = sign * s * k;
                            float rounding = MathF.Abs((float)(Half)m - m);
                            if (rounding < bestRounding) (bestRounding, bestSign, bestK) = (rounding, sign, k);
                        }
                    }
                    if (bestSign == 0) return false;
                    for (int j = 0; j < 32; j++) q[j] = bestSign * n[j] - bestK;
                    GgmlQuantizers.WriteFp16(block, 0, bestSign * s);
                    GgmlQuantizers.WriteFp16(block, 2, bestSign * s * bestK);
                    if (type == TensorType.Q4_1) GgmlQuantizers.PackNibbles(q, block.Slice(4, 16));
                    else GgmlQuantizers.PackFiveBits(q, block.Slice(4, 4), block.Slice(8, 16));
                    return true;
                }
            default:
                return false;
        }
    }
}

/// <summary>How one compressed module was written to GGUF: its blocks that decode exactly to the compressed weights, and the error of the rest.</summary>
public sealed class MappedLayer(string module, TensorType type)
{
    public string Module { get; } = module;
    /// <summary>The GGUF type written (see <see cref="GptqGgufMapping.TargetType"/>).</summary>
    public TensorType Type { get; } = type;
    /// <summary>How the module was stored (<see cref="ScaledIntegerMatrix.Description"/>, or e.g. "ggml Q4_K" for blocks copied unchanged), known once written.</summary>
    public string From { get; internal set; } = "";
    public Tally Counts { get; } = new();
    /// <summary>Whether re-fits minimised the activation-weighted error (the layer's importance was recorded).</summary>
    public bool ImportanceWeighted { get; internal set; }
    public bool Exact => Counts.ExactBlocks == Counts.Blocks;

    /// <summary>Running counts for one tensor (rows are tallied separately and added in order).</summary>
    public sealed class Tally
    {
        public long Blocks { get; private set; }
        /// <summary>Blocks that decode bit for bit to the compressed weights.</summary>
        public long ExactBlocks { get; private set; }
        /// <summary>Blocks encoded from the dequantized weights (the rest kept the method's integers).</summary>
        public long RefitBlocks { get; private set; }
        public double MaxAbsError { get; private set; }
        public double SquaredError { get; private set; }
        public double SquaredWeights { get; private set; }
        /// <summary>Σ importance_j·(Ŵ_gguf − Ŵ)² over the layer (equal to <see cref="SquaredError"/> without importance).</summary>
        public double WeightedSquaredError { get; private set; }
        /// <summary>‖Ŵ_gguf − Ŵ‖² / ‖Ŵ‖².</summary>
        public double RelativeError => SquaredWeights == 0 ? SquaredError : SquaredError / SquaredWeights;

        public void AddElement(double delta, double weight, double importance = 1)
        {
            MaxAbsError = Math.Max(MaxAbsError, Math.Abs(delta));
            SquaredError += delta * delta;
            SquaredWeights += weight * weight;
            WeightedSquaredError += importance * delta * delta;
        }

        public void AddBlock(bool exact, bool refit, long count = 1)
        {
            Blocks += count;
            if (exact) ExactBlocks += count;
            if (refit) RefitBlocks += count;
        }

        public void Add(Tally other)
        {
            Blocks += other.Blocks;
            ExactBlocks += other.ExactBlocks;
            RefitBlocks += other.RefitBlocks;
            MaxAbsError = Math.Max(MaxAbsError, other.MaxAbsError);
            SquaredError += other.SquaredError;
            SquaredWeights += other.SquaredWeights;
            WeightedSquaredError += other.WeightedSquaredError;
        }
    }

    /// <summary>
    /// One line for the console, per (source scheme, GGUF type): how many layers decode exactly to the compressed
    /// weights, how many kept the method's integers with an fp16-rounded block scale or offset, and which were re-fit —
    /// e.g. "GPTQ 4-bit g32 sym → Q4_0: 56 exact" or
    /// "GPTQ 4-bit g128 sym act-order → Q4_0: 0 exact, 56 re-fit with activation-weighted error (imatrix from calibration) (… model.layers.0.mlp.down_proj: 99% of blocks, rel. error 6.0E-003; …)".
    /// </summary>
    public static string Summary(IReadOnlyList<MappedLayer> layers)
    {
        var inv = CultureInfo.InvariantCulture;
        var parts = new List<string>();
        foreach (var group in layers.GroupBy(l => (l.From, l.Type)))
        {
            var exact = group.Where(l => l.Exact).ToList();
            var rounded = group.Where(l => !l.Exact && l.Counts.RefitBlocks == 0).ToList();
            var refit = group.Where(l => l.Counts.RefitBlocks > 0).ToList();
            string text = $"{group.Key.From} → {group.Key.Type}: {exact.Count} exact";
            if (rounded.Count > 0)
                text += string.Create(inv, $", {rounded.Count} with the method's integers but fp16-rounded block constants (max |Δw| {rounded.Max(l => l.Counts.MaxAbsError):E1})");
            if (refit.Count > 0)
            {
                var shown = refit.Take(3).Select(l => string.Create(inv,
                    $"{l.Module}: {100.0 * l.Counts.RefitBlocks / l.Counts.Blocks:F0}% of blocks, rel. error {l.Counts.RelativeError:E1}"));
                string objective = refit.All(l => l.ImportanceWeighted) ? "activation-weighted error (imatrix from calibration)"
                    : refit.Any(l => l.ImportanceWeighted) ? "activation-weighted error (imatrix from calibration) where recorded, else unweighted error"
                    : "unweighted error";
                text += $", {refit.Count} re-fit with {objective} ({string.Join("; ", shown)}{(refit.Count > 3 ? $"; {refit.Count - 3} more" : "")})";
            }
            parts.Add(text);
        }
        return string.Join(" | ", parts);
    }
}
