namespace LlmShrink.Training;

/// <summary>
/// Clipping by the global norm (Pascanu et al. 2013): ‖g‖ = √(Σ over every parameter of Σ g²); when it exceeds c,
/// every gradient is scaled by c / ‖g‖, which keeps the update's direction and bounds its length.
/// </summary>
public static class GradientClipping
{
    /// <summary>Scales the gradients down to norm <paramref name="maxNorm"/> if they are longer; returns the norm before clipping.</summary>
    public static double ClipGlobalNorm(IReadOnlyList<Parameter> parameters, double maxNorm)
    {
        double norm = GlobalNorm(parameters);
        if (norm > maxNorm)
        {
            float scale = (float)(maxNorm / norm);
            foreach (var p in parameters) System.Numerics.Tensors.TensorPrimitives.Multiply(p.Grad, scale, p.Grad);
        }
        return norm;
    }

    public static double GlobalNorm(IReadOnlyList<Parameter> parameters)
    {
        double sum = 0;
        foreach (var p in parameters)
            foreach (float g in p.Grad) sum += (double)g * g;
        return Math.Sqrt(sum);
    }
}
