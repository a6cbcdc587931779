namespace LlmShrink.Kernels;

/// <summary>
/// Activation rows on a 64-byte boundary for the prompt micro-kernels. A .NET float[] starts 16 bytes past an 8-byte
/// aligned object, so most 512-bit loads of its rows straddle two cache lines; the 4×4 micro-kernel loads four x rows
/// per step, and copying x once per call (O(n·in) against O(n·in·out) multiply-adds) made the F16 prompt GEMM 9–10 %
/// faster (ggml-gemv --n 64, 2048 → 8192, 1 and 2 threads; docs/BENCHMARKS.md).
/// </summary>
internal static unsafe class AlignedRows
{
    public const int Alignment = 64;

    [ThreadStatic] private static float[]? t_staging;

    /// <summary>
    /// <paramref name="x"/> itself if it is aligned, else a copy of its <paramref name="count"/> floats in this thread's
    /// staging buffer (pinned; valid until the thread's next call).
    /// </summary>
    public static float* Of(float* x, long count)
    {
        if (IsAligned(x)) return x;
        if (t_staging is null || t_staging.Length < count + Alignment / sizeof(float))
            t_staging = GC.AllocateUninitializedArray<float>(checked((int)count + Alignment / sizeof(float)), pinned: true);
        fixed (float* staging = t_staging)
        {
            float* aligned = Align(staging);
            new ReadOnlySpan<float>(x, checked((int)count)).CopyTo(new Span<float>(aligned, (int)count));
            return aligned; // pinned array: the address stays valid after the fixed block
        }
    }

    /// <summary>The first 64-byte boundary at or after <paramref name="p"/>.</summary>
    public static float* Align(float* p) => (float*)(((nuint)p + Alignment - 1) & ~(nuint)(Alignment - 1));

    public static bool IsAligned(float* p) => ((nuint)p & (Alignment - 1)) == 0;
}
