using LlmShrink.Model;

namespace LlmShrink.Tests;

/// <summary>
/// The forward pass written as plainly as possible, independently of the library's kernels: double accumulation,
/// no KV cache (full causal attention recomputed for every position), RoPE from the formula, each block by its own
/// widths. Tests hold the fast <see cref="Transformer"/> to it.
/// </summary>
public static class ReferenceForward
{
    /// <summary>Logits [tokens.Length][vocab] for every position of <paramref name="tokens"/>, starting at position 0.</summary>
    public static double[][] Logits(LoadedModel model, int[] tokens)
    {
        var decoded = new Dictionary<string, double[]>();
        double[] W(string name) =>
            decoded.TryGetValue(name, out var w) ? w : decoded[name] = model.Weights.Get(name).ToFloatArray().Select(v => (double)v).ToArray();
        return Logits(model.Config, W, model.Weights.Find(TensorNames.RopeFrequencyFactors)?.ToFloatArray(), tokens);
    }

    /// <summary>The same for weights given by canonical name (the training tests perturb them one value at a time).</summary>
    public static double[][] Logits(ModelConfig c, Func<string, double[]> W, float[]? ropeFactors, int[] tokens)
    {
        int n = tokens.Length, d = c.HiddenSize;
        var embedding = W(TensorNames.Embedding);
        var x = new double[n][];
        for (int t = 0; t < n; t++) x[t] = embedding.AsSpan(tokens[t] * d, d).ToArray();
        x = Blocks(c, W, ropeFactors, x);
        var head = W(c.TiedEmbeddings ? TensorNames.Embedding : TensorNames.LmHead);
        return x.Select(row => Linear(Norm(row, W(TensorNames.FinalNorm), c.RmsNormEps), head, null, c.VocabSize)).ToArray();
    }

    /// <summary>The blocks alone on hidden states <paramref name="x"/> ([positions][hidden], from position 0), changed in place and returned.</summary>
    public static double[][] Blocks(ModelConfig c, Func<string, double[]> W, float[]? ropeFactors, double[][] x)
    {
        int n = x.Length, d = c.HiddenSize, hd = c.HeadDim;
        double[] freqs = Frequencies(c, ropeFactors);

        for (int l = 0; l < c.NumLayers; l++)
        {
            string L(string s) => TensorNames.Layer(l, s);
            var shape = c.Layer(l);
            int qDim = shape.Heads * hd, kvDim = shape.KvHeads * hd;
            double[]? Opt(string s) => c.AttentionBias ? W(L(s)) : null;
            var xn = x.Select(row => Norm(row, W(L(TensorNames.AttnNorm)), c.RmsNormEps)).ToArray();
            var q = xn.Select(row => Linear(row, W(L(TensorNames.Q)), Opt(TensorNames.QBias), qDim)).ToArray();
            var k = xn.Select(row => Linear(row, W(L(TensorNames.K)), Opt(TensorNames.KBias), kvDim)).ToArray();
            var v = xn.Select(row => Linear(row, W(L(TensorNames.V)), Opt(TensorNames.VBias), kvDim)).ToArray();
            for (int t = 0; t < n; t++)
            {
                for (int h = 0; h < shape.Heads; h++) HeadTransform(q[t], h * hd, t, c, freqs, c.QkNorm ? W(L(TensorNames.QNorm)) : null);
                for (int h = 0; h < shape.KvHeads; h++) HeadTransform(k[t], h * hd, t, c, freqs, c.QkNorm ? W(L(TensorNames.KNorm)) : null);
            }
            var attention = new double[n][];
            for (int t = 0; t < n; t++)
            {
                attention[t] = new double[qDim];
                for (int h = 0; h < shape.Heads; h++)
                {
                    int kvh = h / (shape.Heads / shape.KvHeads);
                    int from = c.SlidingWindow is int window ? Math.Max(0, t - window + 1) : 0;
                    var scores = new double[t + 1 - from];
                    for (int s = from; s <= t; s++)
                    {
                        double dot = 0;
                        for (int i = 0; i < hd; i++) dot += q[t][h * hd + i] * k[s][kvh * hd + i];
                        scores[s - from] = dot / Math.Sqrt(hd);
                    }
                    double max = scores.Max(), sum = scores.Sum(e => Math.Exp(e - max));
                    for (int s = from; s <= t; s++)
                        for (int i = 0; i < hd; i++)
                            attention[t][h * hd + i] += Math.Exp(scores[s - from] - max) / sum * v[s][kvh * hd + i];
                }
            }
            for (int t = 0; t < n; t++)
            {
                var o = Linear(attention[t], W(L(TensorNames.O)), null, d);
                for (int i = 0; i < d; i++) x[t][i] += o[i];
                var h2 = Norm(x[t], W(L(TensorNames.FfnNorm)), c.RmsNormEps);
                var gate = Linear(h2, W(L(TensorNames.Gate)), null, shape.IntermediateSize);
                var up = Linear(h2, W(L(TensorNames.Up)), null, shape.IntermediateSize);
                var act = gate.Select((g, i) => g / (1 + Math.Exp(-g)) * up[i]).ToArray();
                var down = Linear(act, W(L(TensorNames.Down)), null, d);
                for (int i = 0; i < d; i++) x[t][i] += down[i];
            }
        }
        return x;
    }

    private static double[] Norm(double[] x, double[] weight, double eps)
    {
        double rms = Math.Sqrt(x.Sum(e => e * e) / x.Length + eps);
        return x.Select((e, i) => e / rms * weight[i]).ToArray();
    }

    private static double[] Linear(double[] x, double[] w, double[]? bias, int outFeatures)
    {
        var y = new double[outFeatures];
        for (int o = 0; o < outFeatures; o++)
        {
            double sum = bias?[o] ?? 0;
            for (int i = 0; i < x.Length; i++) sum += w[o * x.Length + i] * x[i];
            y[o] = sum;
        }
        return y;
    }

    /// <summary>Optional per-head RMSNorm (qwen3), then rotation of each pair by position·θ_p as the complex product (a + ib)·e^(iφ).</summary>
    private static void HeadTransform(double[] vec, int offset, int position, ModelConfig c, double[] freqs, double[]? norm)
    {
        int hd = c.HeadDim;
        if (norm is not null)
        {
            var normed = Norm(vec.AsSpan(offset, hd).ToArray(), norm, c.RmsNormEps);
            normed.CopyTo(vec, offset);
        }
        for (int p = 0; p < hd / 2; p++)
        {
            int re = offset + (c.RopeStyle == RopeStyle.Interleaved ? 2 * p : p);
            int im = offset + (c.RopeStyle == RopeStyle.Interleaved ? 2 * p + 1 : p + hd / 2);
            double phi = position * freqs[p];
            double a = vec[re], b = vec[im];
            vec[re] = a * Math.Cos(phi) - b * Math.Sin(phi);
            vec[im] = a * Math.Sin(phi) + b * Math.Cos(phi);
        }
    }

    /// <summary>θ_p = base^(−2p/d), divided by stored factors, or rescaled by the llama3 rule (Llama 3.1 model card code).</summary>
    public static double[] Frequencies(ModelConfig c, float[]? factors)
    {
        var freqs = new double[c.HeadDim / 2];
        for (int p = 0; p < freqs.Length; p++)
        {
            double f = 1.0 / Math.Pow(c.RopeTheta, 2.0 * p / c.HeadDim);
            if (factors is not null) f /= factors[p];
            else if (c.RopeScaling is { } s)
            {
                double wavelength = 2 * Math.PI / f;
                double lowFreqWavelength = s.OriginalMaxPositions / s.LowFreqFactor;
                double highFreqWavelength = s.OriginalMaxPositions / s.HighFreqFactor;
                if (wavelength > lowFreqWavelength) f /= s.Factor;
                else if (wavelength >= highFreqWavelength)
                {
                    double smooth = (s.OriginalMaxPositions / wavelength - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                    f = (1 - smooth) * f / s.Factor + smooth * f;
                }
            }
            freqs[p] = f;
        }
        return freqs;
    }
}
