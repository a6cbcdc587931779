namespace LlmShrink.Training;

/// <summary>
/// Linear warmup then cosine decay (Loshchilov &amp; Hutter 2017, SGDR without restarts), as llm.c schedules it: for
/// step s (from 0), η = η_max·(s + 1)/W during the W warmup steps; then with progress r = (s − W)/(S − W),
/// η = η_min + ½(1 + cos πr)(η_max − η_min); η_min after the last step S.
/// </summary>
public sealed record LearningRateSchedule(float MaxLr, float MinLr, int WarmupSteps, int TotalSteps)
{
    public float At(int step)
    {
        if (step < WarmupSteps) return MaxLr * (step + 1) / WarmupSteps;
        if (step >= TotalSteps) return MinLr;
        double progress = (step - WarmupSteps) / (double)(TotalSteps - WarmupSteps);
        return (float)(MinLr + 0.5 * (1 + Math.Cos(Math.PI * progress)) * (MaxLr - MinLr));
    }
}
