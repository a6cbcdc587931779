using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LlmShrink.LinearAlgebra;

/// <summary>
/// Householder reduction of a symmetric matrix to tridiagonal form, T = QᵀAQ with Q = H₀H₁⋯H_{n−3} (Golub &amp; Van
/// Loan, 4th ed., Algorithm 8.3.1), blocked as LAPACK dsytrd/dlatrd (Dongarra, Sorensen &amp; Hammarling 1989): the
/// reflectors of a panel of <see cref="PanelWidth"/> columns are formed with the trailing matrix left as it was at the
/// panel's start, corrected on the fly by the panel's V and W (A' = A − VWᵀ − WVᵀ), and the trailing matrix is then
/// updated once per panel by a rank-2·<see cref="PanelWidth"/> GEMM. What remains per column is a symmetric
/// matrix-vector product with the trailing matrix: half of the flops, and bound by memory bandwidth, so it reads the
/// stored triangle once, forms both halves of the product from it, and splits the columns over the threads.
///
/// Storage: the matrix is row-major n×n and element (r, c), r ≥ c, of the lower triangle is held at x[c·n + r], which
/// is the upper triangle of the row-major array (the column-major lower triangle, as LAPACK with uplo = 'L'): the
/// column below each diagonal entry is contiguous. Reflector k is H_k = I − τ_k v vᵀ with v₀ = 1, held at
/// x[k·n + k + 1 …], where column k's part below the sub-diagonal was.
/// </summary>
static unsafe class HouseholderTridiagonal
{
    const int PanelWidth = 32;
    /// <summary>Below this trailing size a matrix-vector product is not worth a second thread.</summary>
    const int ParallelSize = 384;

    /// <summary>
    /// Reduces <paramref name="x"/> in place (storage as described on the class): <paramref name="d"/> [n] and
    /// <paramref name="e"/> [n−1] receive T's diagonal and sub-diagonal, <paramref name="tau"/> [n] the reflectors'
    /// scalars (τ = 0 for n−2, n−1).
    /// </summary>
    public static void Reduce(double[] x, int n, double[] d, double[] e, double[] tau, int threads)
    {
        // VW holds the panel's V (rows 0…w−1) and W (rows w…2w−1), each row a column of length n; WV the same swapped.
        var vw = new double[2 * PanelWidth * n];
        var wv = new double[2 * PanelWidth * n];
        var y = new double[PartsPerThread * threads * n];
        fixed (double* px = x, pvw = vw, pwv = wv, py = y)
        {
            for (int k = 0; k < n - 2; k += PanelWidth)
            {
                int width = Math.Min(PanelWidth, n - 2 - k);
                new Span<double>(pvw, 2 * width * n).Clear();
                Panel(px, n, k, width, pvw, pvw + (long)width * n, d, e, tau, py, threads);
                int start = k + width, size = n - start;
                if (size <= 0) continue;
                // A[start.., start..] −= V Wᵀ + W Vᵀ on the stored triangle: C[c, r] −= Σ_t P[t, c]·Q[t, r] with
                // P = [W; V] and Q = [V; W].
                new Span<double>(pvw + (long)width * n, width * n).CopyTo(new Span<double>(pwv, width * n));
                new Span<double>(pvw, width * n).CopyTo(new Span<double>(pwv + (long)width * n, width * n));
                BlockedGemm.MultiplyAdd(px + (long)start * n + start, n, pwv + start, n, true, pvw + start, n, false,
                    size, size, 2 * width, -1.0, threads, BlockedGemm.Triangle.Upper);
            }
        }
        if (n >= 2)
        {
            d[n - 2] = x[(n - 2) * n + n - 2];
            e[n - 2] = x[(n - 2) * n + n - 1];
            tau[n - 2] = 0;
        }
        d[n - 1] = x[(n - 1) * n + n - 1];
        tau[n - 1] = 0;
    }

    /// <summary>
    /// Reflectors k…k+width−1 (LAPACK dlatrd): column i is first brought up to date with the panel's earlier
    /// reflectors, then reduced; w_i = τ(A'v − ½τ(vᵀA'v)v) with A' the trailing matrix as updated so far.
    /// </summary>
    static void Panel(double* x, int n, int k, int width, double* v, double* w, double[] d, double[] e, double[] tau,
        double* y, int threads)
    {
        for (int t = 0; t < width; t++)
        {
            int i = k + t, length = n - i;
            var column = new Span<double>(x + (long)i * n + i, length);
            for (int s = 0; s < t; s++)
            {
                var vs = new ReadOnlySpan<double>(v + (long)s * n + i, length);
                var ws = new ReadOnlySpan<double>(w + (long)s * n + i, length);
                TensorPrimitives.MultiplyAdd(vs, -w[(long)s * n + i], column, column);
                TensorPrimitives.MultiplyAdd(ws, -v[(long)s * n + i], column, column);
            }
            d[i] = column[0];
            var reflector = column[1..];
            tau[i] = Reflector(reflector, out e[i]);
            if (tau[i] == 0) continue; // V and W columns stay zero: H_i = I
            var vt = new Span<double>(v + (long)t * n + i + 1, length - 1);
            var wt = new Span<double>(w + (long)t * n + i + 1, length - 1);
            reflector.CopyTo(vt);

            // w = A'v with A' = A − V Wᵀ − W Vᵀ over the panel's earlier columns.
            SymmetricProduct(x, n, i + 1, length - 1, v + (long)t * n + i + 1, w + (long)t * n + i + 1, y, threads);
            for (int s = 0; s < t; s++)
            {
                var vs = new ReadOnlySpan<double>(v + (long)s * n + i + 1, length - 1);
                var ws = new ReadOnlySpan<double>(w + (long)s * n + i + 1, length - 1);
                TensorPrimitives.MultiplyAdd(vs, -TensorPrimitives.Dot(ws, vt), wt, wt);
                TensorPrimitives.MultiplyAdd(ws, -TensorPrimitives.Dot(vs, vt), wt, wt);
            }
            TensorPrimitives.Multiply(wt, tau[i], wt);
            TensorPrimitives.MultiplyAdd(vt, -0.5 * tau[i] * TensorPrimitives.Dot(wt, vt), wt, wt);
        }
    }

    /// <summary>
    /// Householder vector of x (LAPACK dlarfg): on return x holds v with v₀ = 1, and H x = β e₀ with
    /// H = I − τ v vᵀ and β = −sign(x₀)‖x‖; τ = 0 (H = I) when x already points along e₀.
    /// </summary>
    public static double Reflector(Span<double> x, out double beta)
    {
        double alpha = x[0], tailNorm = TensorPrimitives.Norm<double>(x[1..]);
        if (tailNorm == 0)
        {
            beta = alpha;
            x[0] = 1;
            return 0;
        }
        beta = -Math.CopySign(double.Hypot(alpha, tailNorm), alpha);
        TensorPrimitives.Multiply(x[1..], 1 / (alpha - beta), x[1..]);
        x[0] = 1;
        return (beta - alpha) / beta;
    }

    /// <summary>
    /// result = S·v for the trailing matrix S = A[start.., start..] (size <paramref name="size"/>) from its stored triangle.
    /// The columns are cut into <see cref="PartsPerThread"/> parts per thread of equal area, claimed by whichever thread
    /// is free (on a shared machine a descheduled thread then delays nobody); each part adds into its own row of
    /// <paramref name="scratch"/> [parts, n], and the rows are summed in order, so the result does not depend on which
    /// thread did what.
    /// </summary>
    static void SymmetricProduct(double* x, int n, int start, int size, double* v, double* result, double* scratch, int threads)
    {
        if (size < ParallelSize || threads == 1)
        {
            new Span<double>(result, size).Clear();
            SymmetricColumns(x, n, start, size, v, result, 0, size);
            return;
        }
        int parts = PartsPerThread * threads;
        Parallel.For(0, parts, new ParallelOptions { MaxDegreeOfParallelism = threads }, p =>
        {
            double* part = scratch + (long)p * n;
            new Span<double>(part, size).Clear();
            SymmetricColumns(x, n, start, size, v, part, AreaSplit(size, p, parts), AreaSplit(size, p + 1, parts));
        });
        new Span<double>(scratch, size).CopyTo(new Span<double>(result, size));
        for (int p = 1; p < parts; p++)
            TensorPrimitives.Add(new ReadOnlySpan<double>(result, size), new ReadOnlySpan<double>(scratch + (long)p * n, size), new Span<double>(result, size));
    }

    const int PartsPerThread = 4;

    /// <summary>The first column of part <paramref name="p"/> of <paramref name="parts"/> when the lower triangle is split by area.</summary>
    static int AreaSplit(int size, int p, int parts) =>
        p == parts ? size : size - (int)Math.Round(size * Math.Sqrt(1 - (double)p / parts));

    /// <summary>
    /// Columns [c0, c1) of S·v, S lower-stored by columns (column c, rows c…, contiguous): each stored entry S[r, c] adds
    /// S[r, c]·v[c] to y[r] and, below the diagonal, S[r, c]·v[r] to y[c], in one pass over the column.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void SymmetricColumns(double* x, int n, int start, int size, double* v, double* y, int c0, int c1)
    {
        for (int c = c0; c < c1; c++)
        {
            double* column = x + (long)(start + c) * n + start + c; // column[r − c] = S[r, c]
            double vc = v[c];
            int r = c + 1, end = size;
            var vcv = Vector512.Create(vc);
            var dot = Vector512<double>.Zero;
            for (; r + 8 <= end; r += 8)
            {
                var s = Vector512.Load(column + (r - c));
                Vector512.FusedMultiplyAdd(s, vcv, Vector512.Load(y + r)).Store(y + r);
                dot = Vector512.FusedMultiplyAdd(s, Vector512.Load(v + r), dot);
            }
            double tail = 0;
            for (; r < end; r++)
            {
                double s = column[r - c];
                y[r] += s * vc;
                tail += s * v[r];
            }
            y[c] += column[0] * vc + Vector512.Sum(dot) + tail;
        }
    }

    /// <summary>
    /// W ← W·Qᵀ = W·H_{n−3}⋯H₀ for W [rows, n] row-major: rows that hold eigenvectors of T become eigenvectors of A.
    /// The reflectors are applied <see cref="BackTransformBlock"/> at a time in compact WY form (Schreiber &amp; Van
    /// Loan 1989; LAPACK dlarft/dlarfb): H_j⋯H_{j+b−1} = I − V T Vᵀ with T upper triangular, so
    /// W·H_{j+b−1}⋯H_j = W − (W V) Tᵀ Vᵀ, two GEMMs and a small triangular product.
    /// </summary>
    public static void BackTransform(double[] reduced, int n, double[] tau, double[] w, int rows, int threads)
    {
        int reflectors = n - 2;
        if (reflectors <= 0 || rows <= 0) return;
        var vt = new double[BackTransformBlock * n];
        var t = new double[BackTransformBlock * BackTransformBlock];
        var wv = new double[(long)rows * BackTransformBlock];
        var wvt = new double[(long)rows * BackTransformBlock];
        int lastBlock = (reflectors - 1) / BackTransformBlock * BackTransformBlock;
        fixed (double* pw = w, pv = vt, pt = t, py = wv, pz = wvt)
            for (int j = lastBlock; j >= 0; j -= BackTransformBlock)
            {
                int count = Math.Min(BackTransformBlock, reflectors - j), length = n - j - 1;
                // V's columns as rows of vt [count, length], indexed from row j+1 of V: zeros, the unit, then v.
                new Span<double>(pv, count * length).Clear();
                for (int s = 0; s < count; s++)
                {
                    pv[s * length + s] = 1;
                    reduced.AsSpan((j + s) * n + j + s + 2, length - s - 1).CopyTo(new Span<double>(pv + s * length + s + 1, length - s - 1));
                }
                TriangularFactor(pv, count, length, tau.AsSpan(j, count), pt, threads);
                // Y = W V, Z = Y Tᵀ, W −= Z Vᵀ on W's columns j+1….
                new Span<double>(py, rows * count).Clear();
                new Span<double>(pz, rows * count).Clear();
                BlockedGemm.MultiplyAdd(py, count, pw + j + 1, n, false, pv, length, true, rows, count, length, 1.0, threads);
                BlockedGemm.MultiplyAdd(pz, count, py, count, false, pt, count, true, rows, count, count, 1.0, threads);
                BlockedGemm.MultiplyAdd(pw + j + 1, n, pz, count, false, pv, length, false, rows, length, count, -1.0, threads);
            }
    }

    /// <summary>
    /// Reflectors per compact-WY block: each block reads and writes all of W once, so fewer, larger blocks move less
    /// memory (for n = 4096, W is 134 MB); T's cost grows as the block, but its VᵀV is a GEMM too.
    /// </summary>
    const int BackTransformBlock = 256;

    /// <summary>
    /// T [count, count] upper triangular with H₀⋯H_{count−1} = I − V T Vᵀ (LAPACK dlarft, forward, columnwise):
    /// T[i, i] = τ_i and T[0:i, i] = −τ_i·T[0:i, 0:i]·(V[:, 0:i]ᵀ v_i), with all of VᵀV formed first by one GEMM.
    /// </summary>
    static void TriangularFactor(double* vt, int count, int length, ReadOnlySpan<double> tau, double* t, int threads)
    {
        var gram = new double[count * count];
        fixed (double* pg = gram)
            BlockedGemm.MultiplyAdd(pg, count, vt, length, false, vt, length, true, count, count, length, 1.0, threads, BlockedGemm.Triangle.Upper);
        new Span<double>(t, count * count).Clear();
        Span<double> z = stackalloc double[count];
        for (int i = 0; i < count; i++)
        {
            for (int s = 0; s < i; s++) z[s] = -tau[i] * gram[s * count + i];
            for (int r = 0; r < i; r++)
            {
                double sum = 0;
                for (int s = r; s < i; s++) sum += t[r * count + s] * z[s];
                t[r * count + i] = sum;
            }
            t[i * count + i] = tau[i];
        }
    }
}
