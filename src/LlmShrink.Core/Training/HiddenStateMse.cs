using System.Numerics.Tensors;

namespace LlmShrink.Training;

/// <summary>
/// Mean squared error between the student's and the teacher's final hidden states (the final-normed states lm_head reads),
/// the hidden-state term of TinyBERT (Jiao et al. 2020, Eq. 8) and MiniLM-style distillation on the last layer only:
/// L = (1/(N·d)) Σ (h_s − h_t)², ∂L/∂h_s = 2 (h_s − h_t)/(N·d). Needs equal hidden sizes (no learned projection).
/// </summary>
public static class HiddenStateMse
{
    /// <summary>Returns L and adds <paramref name="weight"/>·∂L/∂h_s into <paramref name="dStudent"/>.</summary>
    public static double Forward(ReadOnlySpan<float> teacher, ReadOnlySpan<float> student, Span<float> dStudent, float weight)
    {
        if (teacher.Length != student.Length || dStudent.Length != student.Length)
            throw new ArgumentException("teacher and student hidden states and the gradient must have the same length");
        double sum = 0;
        for (int i = 0; i < student.Length; i++)
        {
            float diff = student[i] - teacher[i];
            sum += (double)diff * diff;
            dStudent[i] += weight * 2 * diff / student.Length;
        }
        return sum / student.Length;
    }
}
