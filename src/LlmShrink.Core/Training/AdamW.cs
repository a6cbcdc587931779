namespace LlmShrink.Training;

/// <summary>
/// Adam with decoupled weight decay (Loshchilov &amp; Hutter 2019, Algorithm 2), in the form PyTorch and llm.c use:
/// at step t (from 1), for every value θ with gradient g,
/// m ← β₁ m + (1 − β₁) g,  v ← β₂ v + (1 − β₂) g²,  m̂ = m / (1 − β₁ᵗ),  v̂ = v / (1 − β₂ᵗ),
/// θ ← θ − η (m̂ / (√v̂ + ε) + λ θ).
/// The decay λθ is not part of the gradient (so it is not rescaled by √v̂): that is what "decoupled" means. It applies
/// to matrices only (<see cref="Parameter.Decays"/>). Moments are float32 arrays beside each parameter. The defaults are PyTorch's.
/// </summary>
public sealed class AdamW(float beta1 = 0.9f, float beta2 = 0.999f, float eps = 1e-8f, float weightDecay = 0.01f)
{
    private readonly Dictionary<Parameter, (float[] M, float[] V)> _moments = new(ReferenceEqualityComparer.Instance);

    /// <summary>Steps taken so far (t of the last update).</summary>
    public int Step { get; private set; }

    /// <summary>One update of every parameter with learning rate <paramref name="lr"/> (η) times its <see cref="Parameter.RateScale"/>.</summary>
    public void Update(IReadOnlyList<Parameter> parameters, float lr)
    {
        int t = ++Step;
        double correction1 = 1 - Math.Pow(beta1, t), correction2 = 1 - Math.Pow(beta2, t);
        foreach (var p in parameters)
        {
            if (!_moments.TryGetValue(p, out var state)) _moments[p] = state = (new float[p.Value.Length], new float[p.Value.Length]);
            var (m, v) = state;
            float decay = p.Decays ? weightDecay : 0;
            float rate = lr * p.RateScale;
            var theta = p.Value;
            var grad = p.Grad;
            Parallel.For(0, (theta.Length + Chunk - 1) / Chunk, c =>
            {
                int end = Math.Min(theta.Length, (c + 1) * Chunk);
                for (int i = c * Chunk; i < end; i++)
                {
                    float g = grad[i];
                    m[i] = beta1 * m[i] + (1 - beta1) * g;
                    v[i] = beta2 * v[i] + (1 - beta2) * g * g;
                    double mHat = m[i] / correction1, vHat = v[i] / correction2;
                    theta[i] -= (float)(rate * (mHat / (Math.Sqrt(vHat) + eps) + decay * theta[i]));
                }
            });
        }
    }

    private const int Chunk = 1 << 16;
}
