using LlmShrink.Compression;
using LlmShrink.Model;

namespace LlmShrink.Training;

/// <summary>What each squared gradient of a <see cref="FisherInformation"/> sum is taken over.</summary>
public enum FisherSample
{
    /// <summary>One calibration sequence, its loss the mean over its positions: the paper's data sample.</summary>
    Sequence,
    /// <summary>
    /// One token position: the gradient of a sequence's loss, Σ_t δ_t·x_tᵀ (δ_t = ∂L/∂y_t), split into each position's
    /// outer product, so I_i = Σ_t δ_ti²·‖x_t‖² — L − 1 terms per sequence instead of one.
    /// </summary>
    Token,
}

/// <summary>
/// The empirical Fisher information of each output row of every linear weight, summed over its inputs: for row i of W,
/// I_i = Σ_samples Σ_j (∂L/∂W_ij)², L the next-token cross-entropy of the calibration text (mean over a sequence's
/// positions). This is the row importance FWSVD weights the factorization by (Hsu et al. 2022, "Language model compression
/// with weighted low-rank factorization": the Fisher of each parameter is E_d[(∂L(d)/∂w)²] over data samples d, and a
/// row shares one weight, the sum of its parameters'). What a sample is (<see cref="FisherSample"/>): a calibration
/// sequence, as the paper's data sample, or a token position. The Fisher's overall scale does not matter to the weighting.
/// <para>Each sequence runs forward and backward through the <see cref="TrainableModel"/>; only the per-row sums are kept
/// (m doubles per linear), never the gradients themselves (the engine holds one set, beside the float32 parameters).</para>
/// </summary>
public sealed class FisherInformation
{
    private readonly Dictionary<(int Layer, LinearRole Role), double[]> _rows;

    /// <summary>Calibration sequences the sums run over.</summary>
    public int Samples { get; }

    private FisherInformation(Dictionary<(int, LinearRole), double[]> rows, int samples) => (_rows, Samples) = (rows, samples);

    /// <summary>
    /// I_i of each output row of <paramref name="role"/> in block <paramref name="layer"/>; lm_head's is at layer
    /// NumLayers (where the pipeline's head stage is). For a model that ties lm_head to the embedding it is that one
    /// tensor's, so the embedding's own gradient is in it too.
    /// </summary>
    public double[] Rows(int layer, LinearRole role) =>
        _rows.TryGetValue((layer, role), out var rows) ? rows : throw new ArgumentException($"no Fisher information for {LinearRoles.ModulePath(layer, role)}");

    /// <summary>Sums the squared gradients over <paramref name="calibration"/> (BOS and L − 1 tokens: L − 1 predictions per sequence).</summary>
    /// <param name="progress">Receives the number of sequences done after each one.</param>
    public static FisherInformation Measure(TrainableModel model, CalibrationSet calibration, FisherSample sample,
        IProgress<int>? progress = null, CancellationToken cancel = default)
    {
        var c = model.Config;
        int length = calibration.SequenceLength - 1;
        if (length < 1) throw new ShrinkException("the Fisher information needs calibration samples of at least 2 tokens");
        var linears = new List<((int, LinearRole) Key, Parameter Weight)>();
        for (int l = 0; l < c.NumLayers; l++)
        {
            var b = model.Blocks[l];
            linears.AddRange([((l, LinearRole.Q), b.Q), ((l, LinearRole.K), b.K), ((l, LinearRole.V), b.V), ((l, LinearRole.O), b.O),
                ((l, LinearRole.Gate), b.Gate), ((l, LinearRole.Up), b.Up), ((l, LinearRole.Down), b.Down)]);
        }
        linears.Add(((c.NumLayers, LinearRole.LmHead), model.LmHead));
        var rows = linears.ToDictionary(p => p.Key, p => new double[p.Weight.Rows]);
        var byWeight = linears.ToDictionary(p => p.Weight, p => rows[p.Key]); // by reference: a tied lm_head is the embedding, once
        if (sample == FisherSample.Token) model.ObserveLinearBackward = (weight, dy, x, n) => AddPositions(byWeight[weight], weight.Columns, dy, x, n);
        var dLogits = new float[length * c.VocabSize];
        try
        {
            for (int s = 0; s < calibration.Samples.Length; s++)
            {
                cancel.ThrowIfCancellationRequested();
                var tokens = calibration.Samples[s];
                model.ZeroGrad();
                var logits = model.Forward(tokens.AsSpan(0, length), 1, length);
                Array.Clear(dLogits);
                CrossEntropy.Forward(logits, tokens.AsSpan(1, length), dLogits, c.VocabSize);
                model.Backward(dLogits);
                if (sample == FisherSample.Sequence)
                    foreach (var (key, weight) in linears)
                    {
                        var sums = rows[key];
                        int n = weight.Columns;
                        for (int i = 0; i < sums.Length; i++) sums[i] += SumOfSquares(weight.Grad.AsSpan(i * n, n));
                    }
                progress?.Report(s + 1);
            }
        }
        finally { model.ObserveLinearBackward = null; }
        return new FisherInformation(rows, calibration.Samples.Length);
    }

    /// <summary>Position t's share of ∂L/∂W is δ_t·x_tᵀ, so its squared row i sums to δ_ti²·‖x_t‖².</summary>
    private static void AddPositions(double[] sums, int columns, ReadOnlySpan<float> dy, ReadOnlySpan<float> x, int n)
    {
        int rows = sums.Length;
        for (int t = 0; t < n; t++)
        {
            double xx = SumOfSquares(x.Slice(t * columns, columns));
            var d = dy.Slice(t * rows, rows);
            for (int i = 0; i < rows; i++) sums[i] += (double)d[i] * d[i] * xx;
        }
    }

    /// <summary>Σ g² of one row, accumulated in float64 as the sums over sequences are.</summary>
    private static double SumOfSquares(ReadOnlySpan<float> g)
    {
        double sum = 0;
        foreach (float x in g) sum += (double)x * x;
        return sum;
    }
}
