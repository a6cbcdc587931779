using LlmShrink.Compression;
using LlmShrink.Model;

namespace LlmShrink.Training;

/// <summary>
/// The empirical Fisher information of each output row of every linear weight, summed over its inputs: for row i of W,
/// I_i = Σ_s Σ_j (∂L_s/∂W_ij)², where L_s is the next-token cross-entropy (mean over positions) of calibration sequence s.
/// This is the row importance FWSVD weights the factorization by (Hsu et al. 2022, "Language model compression with
/// weighted low-rank factorization": the Fisher of each parameter is E_d[(∂L(d)/∂w)²] over data samples d, and rows
/// share one weight, the sum of their parameters'). A sample here is one calibration sequence, a mini-batch of one; the
/// Fisher's overall scale does not matter to the weighting.
/// <para>Each sequence runs forward and backward through the <see cref="TrainableModel"/>; after its backward only the
/// per-row sums of squares are kept (m doubles per linear), never the gradients themselves.</para>
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

    /// <summary>Sums the squared gradients of every sequence of <paramref name="calibration"/> (BOS and L − 1 tokens: L − 1 predictions each).</summary>
    /// <param name="progress">Receives the number of sequences done after each one.</param>
    public static FisherInformation Measure(TrainableModel model, CalibrationSet calibration, IProgress<int>? progress = null, CancellationToken cancel = default)
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
        var dLogits = new float[length * c.VocabSize];
        for (int s = 0; s < calibration.Samples.Length; s++)
        {
            cancel.ThrowIfCancellationRequested();
            var sample = calibration.Samples[s];
            model.ZeroGrad();
            var logits = model.Forward(sample.AsSpan(0, length), 1, length);
            Array.Clear(dLogits);
            CrossEntropy.Forward(logits, sample.AsSpan(1, length), dLogits, c.VocabSize);
            model.Backward(dLogits);
            foreach (var (key, weight) in linears)
            {
                var sums = rows[key];
                int n = weight.Columns;
                for (int i = 0; i < sums.Length; i++) sums[i] += SumOfSquares(weight.Grad.AsSpan(i * n, n));
            }
            progress?.Report(s + 1);
        }
        return new FisherInformation(rows, calibration.Samples.Length);
    }

    /// <summary>Σ g² of one row, accumulated in float64 as the sums over sequences are.</summary>
    private static double SumOfSquares(ReadOnlySpan<float> g)
    {
        double sum = 0;
        foreach (float x in g) sum += (double)x * x;
        return sum;
    }
}
