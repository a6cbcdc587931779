namespace LlmShrink.Tests;

/// <summary>Seeded matrices for the quantization tests: weights with a few outlier input channels, and
/// correlated activations with a few large channels (as LLM activations have).</summary>
static class QuantizationTestData
{
    public static float[] Gaussian(Random rng, int count, float std = 1f)
    {
        var v = new float[count];
        for (int k = 0; k < count; k++)
        {
            double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
            v[k] = (float)(std * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return v;
    }

    /// <summary>W [rows, columns] ~ N(0, 0.02²) with columns 3, 77 and 200 (if present) ten times larger.</summary>
    public static float[] Weights(int rows, int columns, int seed)
    {
        var w = Gaussian(new Random(seed), rows * columns, 0.02f);
        foreach (int c in new[] { 3, 77, 200 })
            if (c < columns)
                for (int r = 0; r < rows; r++) w[r * columns + c] *= 10f;
        return w;
    }

    /// <summary>X [tokens, columns]: a low-rank correlated part plus noise; channels 5 and 130 are 20× larger.</summary>
    public static float[] Activations(int tokens, int columns, int seed)
    {
        var rng = new Random(seed);
        const int rank = 8;
        var basis = Gaussian(rng, rank * columns);
        var coef = Gaussian(rng, tokens * rank);
        var x = Gaussian(rng, tokens * columns, 0.3f);
        for (int t = 0; t < tokens; t++)
            for (int k = 0; k < rank; k++)
                for (int c = 0; c < columns; c++)
                    x[t * columns + c] += coef[t * rank + k] * basis[k * columns + c];
        foreach (int c in new[] { 5, 130 })
            if (c < columns)
                for (int t = 0; t < tokens; t++) x[t * columns + c] *= 20f;
        return x;
    }

    /// <summary>‖X Wᵀ − X Ŵᵀ‖² in double: the layer output error a quantizer should minimize.</summary>
    public static double OutputError(float[] x, int tokens, float[] w, float[] wHat, int rows, int columns)
    {
        double total = 0;
        for (int t = 0; t < tokens; t++)
            for (int r = 0; r < rows; r++)
            {
                double d = 0;
                for (int c = 0; c < columns; c++)
                    d += (double)x[t * columns + c] * (w[r * columns + c] - wHat[r * columns + c]);
                total += d * d;
            }
        return total;
    }
}
