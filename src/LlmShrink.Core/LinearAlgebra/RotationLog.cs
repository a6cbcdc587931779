using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LlmShrink.LinearAlgebra;

/// <summary>
/// The Givens rotations of QR sweeps, gathered and then applied to the rows of a matrix W [n, n] a batch at a time.
/// A sweep over [lo, hi] rotates rows (k, k+1) for k = lo…hi−1 in order: row k ← c·row k + s·row k+1 and
/// row k+1 ← c·row k+1 − s·row k. Every column of W sees the same rotations, so W is cut into strips of
/// <see cref="StripColumns"/> columns (n × 32 values, ~1 MB for n = 4096, kept in L2) that are rotated independently:
/// along a sweep, the rotated row k+1 stays in registers as the next rotation's row k (one load and one store per
/// rotation), and the strip's four vectors are four independent dependency chains, so the FMA pipes stay busy.
/// </summary>
sealed unsafe class RotationLog(double[] w, int n, int threads)
{
    const int StripColumns = 32, Capacity = 1 << 20;

    readonly List<(int Lo, int Hi, int Offset)> sweeps = [];
    // Room for a batch: up to 2²⁰ rotations, less for a small matrix (QR needs ~n² rotations in all), at least one sweep.
    readonly double[] cosines = new double[BatchSize(n)], sines = new double[BatchSize(n)];
    int used;

    static int BatchSize(int n) => (int)Math.Max(Math.Min(Capacity, 4L * n * n), n);

    /// <summary>Starts a sweep over [lo, hi]; its rotations follow by <see cref="Record"/>, k = lo…hi−1 in order.</summary>
    public void Sweep(int lo, int hi)
    {
        if (used + hi - lo > cosines.Length) Flush();
        sweeps.Add((lo, hi, used));
    }

    public void Record(double c, double s)
    {
        cosines[used] = c;
        sines[used++] = s;
    }

    /// <summary>Applies every logged rotation to W and empties the log.</summary>
    public void Flush()
    {
        if (sweeps.Count == 0) return;
        int strips = (n + StripColumns - 1) / StripColumns;
        Parallel.For(0, strips, new ParallelOptions { MaxDegreeOfParallelism = threads }, () => new double[n * StripColumns],
            (strip, _, buffer) =>
            {
                int j0 = strip * StripColumns, width = Math.Min(StripColumns, n - j0);
                // W's rows are n·8 bytes apart, a power of two for the sizes that matter, so a strip read in place maps
                // to a handful of cache sets and is evicted as it is used: it is rotated in a contiguous copy.
                fixed (double* pw = w, pc = cosines, ps = sines, pb = buffer)
                {
                    for (int r = 0; r < n; r++) new ReadOnlySpan<double>(pw + (long)r * n + j0, width).CopyTo(new Span<double>(pb + r * width, width));
                    if (width == StripColumns) RotateStrip(pb, StripColumns, pc, ps);
                    else RotateNarrow(pb, width, pc, ps);
                    for (int r = 0; r < n; r++) new ReadOnlySpan<double>(pb + r * width, width).CopyTo(new Span<double>(pw + (long)r * n + j0, width));
                }
                return buffer;
            }, _ => { });
        sweeps.Clear();
        used = 0;
    }

    /// <summary>All logged sweeps on one strip of 32 columns, four vectors per row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    void RotateStrip(double* strip, int stride, double* cs, double* sn)
    {
        foreach (var (lo, hi, offset) in sweeps)
        {
            double* row = strip + (long)lo * stride;
            Vector512<double> x0 = Vector512.Load(row), x1 = Vector512.Load(row + 8), x2 = Vector512.Load(row + 16), x3 = Vector512.Load(row + 24);
            for (int k = lo; k < hi; k++, row += stride)
            {
                var c = Vector512.Create(cs[offset + k - lo]);
                var s = Vector512.Create(sn[offset + k - lo]);
                double* next = row + stride;
                Vector512<double> y0 = Vector512.Load(next), y1 = Vector512.Load(next + 8), y2 = Vector512.Load(next + 16), y3 = Vector512.Load(next + 24);
                Vector512.FusedMultiplyAdd(s, y0, c * x0).Store(row);
                Vector512.FusedMultiplyAdd(s, y1, c * x1).Store(row + 8);
                Vector512.FusedMultiplyAdd(s, y2, c * x2).Store(row + 16);
                Vector512.FusedMultiplyAdd(s, y3, c * x3).Store(row + 24);
                x0 = Vector512.FusedMultiplyAdd(-s, x0, c * y0);
                x1 = Vector512.FusedMultiplyAdd(-s, x1, c * y1);
                x2 = Vector512.FusedMultiplyAdd(-s, x2, c * y2);
                x3 = Vector512.FusedMultiplyAdd(-s, x3, c * y3);
            }
            x0.Store(row); x1.Store(row + 8); x2.Store(row + 16); x3.Store(row + 24);
        }
    }

    /// <summary>The last strip when n is not a multiple of 32 (rows <paramref name="width"/> apart): the same rotations, one column at a time.</summary>
    void RotateNarrow(double* strip, int width, double* cs, double* sn)
    {
        foreach (var (lo, hi, offset) in sweeps)
            for (int j = 0; j < width; j++)
            {
                double* row = strip + (long)lo * width + j;
                double x = *row;
                for (int k = lo; k < hi; k++, row += width)
                {
                    double c = cs[offset + k - lo], s = sn[offset + k - lo], y = row[width];
                    *row = c * x + s * y;
                    x = c * y - s * x;
                }
                *row = x;
            }
    }
}
