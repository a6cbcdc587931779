using System.Numerics;
using System.Numerics.Tensors;

namespace LlmShrink.LinearAlgebra;

/// <summary>
/// Thin singular value decomposition A = U·diag(S)·Vᵀ (see <see cref="ThinSvd"/>), float64 throughout.
///
/// Method: the Gram matrix of the shorter side, refined where it is inaccurate. For A [m, n] with m ≤ n (a tall A is
/// transposed), G = A·Aᵀ is formed by a GEMM and decomposed as G = Eᵀ·diag(λ)·E (<see cref="SymmetricEigen"/>'s path);
/// then B = E·A has the rows σ_i·v_iᵀ, so σ_i = ‖B_i‖ and v_i = B_i/σ_i, and A = Eᵀ·B exactly. Everything but the
/// m×m eigenproblem is GEMM, which is why this beats a Golub–Kahan bidiagonalization (LAPACK gesdd), whose
/// bidiagonal reduction spends half its flops in memory-bound matrix-vector products over the long side.
///
/// The Gram matrix squares the condition number: λ_i is found with an absolute error of ~ε·σ₁², so σ_i has a relative
/// error of ~ε·(σ₁/σ_i)², and the rows B_i/σ_i of two small σ are orthogonal only to ~ε·σ₁²/(σ_i·σ_j). That is
/// harmless for σ_i ≥ <see cref="TailRatio"/>·σ₁ (the head: relative error and loss of orthogonality below
/// ε/TailRatio² ≈ 10⁻¹³) but not below. The tail rows of B, whose singular values are exactly A's tail values, are
/// therefore made orthogonal to the v_i kept so far and decomposed again by the same method:
/// their Gram matrix has norm ≤ (TailRatio·σ₁)², so each level gains a factor TailRatio² in accuracy, and U's tail
/// columns are E's tail rows turned by that decomposition's U. Levels end when the tail is empty or only rounding noise
/// (below <see cref="NoiseFloor"/>·σ₁), whose v_i are completed to an orthonormal set.
/// </summary>
public static class Svd
{
    const double TailRatio = 0.03, NoiseFloor = 1e-14;

    public static ThinSvd Decompose(ReadOnlySpan<double> a, int rows, int columns, int threads = 0)
    {
        MatrixArguments.Check(a, rows, columns, threads, "SVD");
        return Assemble(Solve(Wide(a, rows, columns), Math.Min(rows, columns), Math.Max(rows, columns), true, threads), rows, columns);
    }

    /// <summary>As the float64 overload; the float32 values are widened exactly and all arithmetic is float64.</summary>
    public static ThinSvd Decompose(ReadOnlySpan<float> a, int rows, int columns, int threads = 0)
    {
        MatrixArguments.Check(a, rows, columns, threads, "SVD");
        return Assemble(Solve(Wide(a, rows, columns), Math.Min(rows, columns), Math.Max(rows, columns), true, threads), rows, columns);
    }

    public static double[] SingularValues(ReadOnlySpan<double> a, int rows, int columns, int threads = 0)
    {
        MatrixArguments.Check(a, rows, columns, threads, "SVD");
        return Solve(Wide(a, rows, columns), Math.Min(rows, columns), Math.Max(rows, columns), false, threads).S;
    }

    public static double[] SingularValues(ReadOnlySpan<float> a, int rows, int columns, int threads = 0)
    {
        MatrixArguments.Check(a, rows, columns, threads, "SVD");
        return Solve(Wide(a, rows, columns), Math.Min(rows, columns), Math.Max(rows, columns), false, threads).S;
    }

    /// <summary>A as float64, transposed when tall, so the Gram matrix is always of the shorter side.</summary>
    static double[] Wide<T>(ReadOnlySpan<T> a, int rows, int columns) where T : IFloatingPointIeee754<T>
    {
        var wide = new double[a.Length];
        if (rows <= columns)
        {
            for (int i = 0; i < a.Length; i++) wide[i] = double.CreateTruncating(a[i]);
            return wide;
        }
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < columns; j++) wide[(long)j * rows + i] = double.CreateTruncating(a[i * columns + j]);
        return wide;
    }

    /// <summary>A wide matrix's decomposition: S [k] descending, U [k, k] (columns), Vt [k, n]; Unset marks Vt rows to complete.</summary>
    sealed record Result(double[] S, double[]? U, double[]? Vt, bool[]? Unset);

    static Result Solve(double[] m, int rows, int columns, bool vectors, int threads)
    {
        var result = Level(m, rows, columns, vectors, 0, [], MatrixArguments.Threads(threads));
        if (vectors) OrthonormalBasis.Complete(result.Vt!, rows, columns, result.Unset!);
        return result;
    }

    /// <summary>
    /// One level of the method on the wide M [rows, columns] (rows ≤ columns); <paramref name="scale"/> is σ₁ of the
    /// original and <paramref name="accepted"/> the v_i (rows of an array, and their count) that the levels above kept.
    /// </summary>
    static Result Level(double[] m, int rows, int columns, bool vectors, double scale, List<(double[] Rows, int Count)> accepted, int threads)
    {
        var gram = Gram(m, rows, columns, threads);
        double[] d = new double[rows], e = new double[Math.Max(rows - 1, 1)], tau = new double[rows];
        HouseholderTridiagonal.Reduce(gram, rows, d, e, tau, threads);
        var lambda = (double[])d.Clone();
        TridiagonalQr.Solve(lambda, (double[])e.Clone(), rows, null, threads);
        Array.Sort(lambda, (x, y) => y.CompareTo(x));
        double top = Math.Sqrt(Math.Max(lambda[0], 0));
        if (scale == 0) scale = top;
        int head = 0;
        while (head < rows && Math.Sqrt(Math.Max(lambda[head], 0)) >= TailRatio * top) head++;
        bool noise = top <= NoiseFloor * scale;
        if (noise) head = rows;
        if (!vectors && head == rows)
        {
            for (int i = 0; i < rows; i++) lambda[i] = Math.Sqrt(Math.Max(lambda[i], 0));
            return new Result(lambda, null, null, null);
        }

        // E: eigenvectors of G as rows, descending; B = E·M (only the tail rows when only values are wanted).
        var w = new double[rows * rows];
        TridiagonalDivideAndConquer.Solve(d, e, rows, w, threads);
        var order = Enumerable.Range(0, rows).ToArray();
        Array.Sort(order, (x, y) => d[y].CompareTo(d[x]));
        int first = vectors ? 0 : head, count = rows - first;
        var eigenvectors = new double[count * rows];
        for (int i = 0; i < count; i++) w.AsSpan(order[first + i] * rows, rows).CopyTo(eigenvectors.AsSpan(i * rows, rows));
        HouseholderTridiagonal.BackTransform(gram, rows, tau, eigenvectors, count, threads);
        var b = Product(eigenvectors, count, rows, m, columns, threads);

        var s = new double[rows];
        bool[]? unset = vectors ? new bool[rows] : null;
        for (int i = 0; i < rows; i++) s[i] = Math.Sqrt(Math.Max(d[order[i]], 0));
        if (vectors)
            for (int i = 0; i < head; i++)
            {
                var row = b.AsSpan(i * columns, columns);
                s[i] = TensorPrimitives.Norm<double>(row);
                if (noise || s[i] == 0) unset![i] = true;
                else TensorPrimitives.Multiply(row, 1 / s[i], row);
            }
        if (noise) b.AsSpan(0, rows * columns).Clear();
        if (head == rows) return Sorted(new Result(s, Transpose(eigenvectors, rows, rows), b, unset), rows, columns);

        // The tail: B's rows head… (or all of b when only values are wanted), kept orthogonal to the head's v_i.
        int tail = rows - head;
        var tailRows = vectors ? b.AsSpan(head * columns, tail * columns).ToArray() : b;
        if (vectors)
        {
            // Against every v kept so far, not only this level's: a tail far below this level's head inherits the
            // rounding of the levels above at their scale. One pass suffices, as the parts removed are at rounding level.
            accepted = [.. accepted, (b, head)];
            foreach (var (basis, kept) in accepted) Orthogonalize(tailRows, tail, basis, kept, columns, threads);
        }
        var sub = Level(tailRows, tail, columns, vectors, scale, accepted, threads);
        sub.S.CopyTo(s, head);
        if (!vectors) return new Result(Sorted(s), null, null, null);

        // U's tail columns: Eᵀ_tail·P, built as rows (Pᵀ·E_tail); V's tail rows: the sub-decomposition's.
        var u = Transpose(eigenvectors, rows, rows);
        var turned = new double[tail * rows];
        unsafe
        {
            fixed (double* pt = turned, pp = sub.U, pe = eigenvectors)
                BlockedGemm.MultiplyAdd(pt, rows, pp, tail, true, pe + (long)head * rows, rows, false, tail, rows, tail, 1.0, threads);
        }
        for (int j = 0; j < tail; j++)
            for (int i = 0; i < rows; i++) u[i * rows + head + j] = turned[j * rows + i];
        sub.Vt!.CopyTo(b, (long)head * columns);
        sub.Unset!.CopyTo(unset!, head);
        return Sorted(new Result(s, u, b, unset), rows, columns);
    }

    /// <summary>The Gram matrix M·Mᵀ in the storage <see cref="HouseholderTridiagonal"/> reduces (its row-major upper triangle).</summary>
    static unsafe double[] Gram(double[] m, int rows, int columns, int threads)
    {
        var g = new double[rows * rows];
        fixed (double* pg = g, pm = m)
            BlockedGemm.MultiplyAdd(pg, rows, pm, columns, false, pm, columns, true, rows, rows, columns, 1.0, threads, BlockedGemm.Triangle.Upper);
        return g;
    }

    /// <summary>X [count, k] · M [k, columns].</summary>
    static unsafe double[] Product(double[] x, int count, int k, double[] m, int columns, int threads)
    {
        var product = new double[(long)count * columns];
        fixed (double* pp = product, px = x, pm = m)
            BlockedGemm.MultiplyAdd(pp, columns, px, k, false, pm, columns, false, count, columns, k, 1.0, threads);
        return product;
    }

    /// <summary>rows −= (rows·headᵀ)·head: removes from each of the <paramref name="count"/> rows its part along the first <paramref name="head"/> rows of <paramref name="basis"/>.</summary>
    static unsafe void Orthogonalize(double[] rows, int count, double[] basis, int head, int columns, int threads)
    {
        var coefficients = new double[count * head];
        fixed (double* pr = rows, pb = basis, pc = coefficients)
        {
            BlockedGemm.MultiplyAdd(pc, head, pr, columns, false, pb, columns, true, count, head, columns, 1.0, threads);
            BlockedGemm.MultiplyAdd(pr, columns, pc, head, false, pb, columns, false, count, columns, head, -1.0, threads);
        }
    }

    static double[] Sorted(double[] s)
    {
        Array.Sort(s, (x, y) => y.CompareTo(x));
        return s;
    }

    /// <summary>The triplets in descending order of S (head values from norms and tail values may interleave at the boundary).</summary>
    static Result Sorted(Result r, int rows, int columns)
    {
        var order = Enumerable.Range(0, rows).ToArray();
        Array.Sort(order, (x, y) => r.S[y].CompareTo(r.S[x]));
        if (order.Select((from, i) => from == i).All(x => x)) return r;
        var s = order.Select(i => r.S[i]).ToArray();
        var unset = order.Select(i => r.Unset![i]).ToArray();
        var u = new double[rows * rows];
        var vt = new double[(long)rows * columns];
        for (int i = 0; i < rows; i++)
        {
            for (int t = 0; t < rows; t++) u[t * rows + i] = r.U![t * rows + order[i]];
            r.Vt.AsSpan(order[i] * columns, columns).CopyTo(vt.AsSpan(i * columns, columns));
        }
        return new Result(s, u, vt, unset);
    }

    /// <summary>The wide problem's result as A's: swapped and transposed back when A was tall.</summary>
    static ThinSvd Assemble(Result r, int rows, int columns)
    {
        if (rows <= columns) return new ThinSvd(rows, columns, r.S, r.U!, r.Vt!);
        // A = Mᵀ = V·S·Uᵀ: A's U is M's V (Vtᵀ), A's Vt is M's Uᵀ.
        return new ThinSvd(rows, columns, r.S, Transpose(r.Vt!, columns, rows), Transpose(r.U!, columns, columns));
    }

    static double[] Transpose(double[] a, int rows, int columns)
    {
        var t = new double[a.Length];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < columns; j++) t[(long)j * rows + i] = a[(long)i * columns + j];
        return t;
    }
}
