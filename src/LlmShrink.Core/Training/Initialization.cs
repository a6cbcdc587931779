using LlmShrink.Model;

namespace LlmShrink.Training;

/// <summary>
/// Weights for training from scratch, as GPT-2 (Radford et al. 2019) and llm.c initialize them: every matrix from
/// N(0, 0.02²), except the projections that write into the residual stream (o_proj, down_proj), whose standard
/// deviation is divided by √(2L) so that the stream's variance does not grow with depth; norm gains 1, biases 0.
/// </summary>
public static class Initialization
{
    public const double Std = 0.02;

    public static TrainableModel Random(ModelConfig config, int seed)
    {
        config.Validate("the model configuration");
        var random = new Random(seed);
        double residualStd = Std / Math.Sqrt(2.0 * config.NumLayers);
        return TrainableModel.Create(config, (name, shape) =>
        {
            var values = new float[shape.Aggregate(1, (a, b) => a * b)];
            if (shape.Length == 1)
            {
                if (!name.EndsWith(".bias", StringComparison.Ordinal)) Array.Fill(values, 1f); // a norm gain
                return values;
            }
            double std = name.EndsWith(TensorNames.O, StringComparison.Ordinal) || name.EndsWith(TensorNames.Down, StringComparison.Ordinal) ? residualStd : Std;
            for (int i = 0; i < values.Length; i++) values[i] = (float)(std * Gaussian(random));
            return values;
        }, default);
    }

    /// <summary>A standard normal sample by the Box–Muller transform.</summary>
    private static double Gaussian(Random random) =>
        Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
}
