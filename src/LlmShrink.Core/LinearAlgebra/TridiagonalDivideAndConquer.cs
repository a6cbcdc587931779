using System.Numerics.Tensors;

namespace LlmShrink.LinearAlgebra;

/// <summary>
/// Eigenvalues and eigenvectors of a symmetric tridiagonal matrix by divide and conquer (Cuppen 1981; Gu &amp;
/// Eisenstat 1995; LAPACK dstedc/dlaed0–dlaed4; Golub &amp; Van Loan, 4th ed., §8.4.4). T is split in two by a rank-one
/// tear, T = diag(T₁, T₂) + ρ·u·uᵀ, the halves are solved recursively, and the eigenproblem of D + ρ·z·zᵀ (D the
/// halves' eigenvalues, z their eigenvectors' entries at the tear) is solved with the secular equation
/// 1 + ρ·Σ z_j²/(d_j − λ) = 0. Its eigenvectors come from Löwner's formula with z recomputed from the computed roots
/// (Gu &amp; Eisenstat), which keeps them orthogonal to working precision however close the roots are; entries that
/// are negligible or poles that nearly coincide are deflated first. Nearly all the flops are the GEMMs that turn the
/// halves' eigenvectors into the merged ones (≈ ⅔n³ multiply-adds with the halves' zero blocks skipped), where the
/// tridiagonal QR algorithm would spend ~6n³ flops on rotations.
///
/// Eigenvectors are rows of W [n, n] (W T Wᵀ = diag(d)), as in <see cref="TridiagonalQr"/>.
/// </summary>
static unsafe class TridiagonalDivideAndConquer
{
    const double Epsilon = 1.1102230246251565e-16;
    /// <summary>Blocks up to this size are solved by the QR algorithm.</summary>
    const int LeafSize = 48;
    /// <summary>Blocks at least this large solve their two halves in parallel.</summary>
    const int ParallelSize = 512;

    /// <summary>d [n] becomes the eigenvalues (unordered), e [n−1] is destroyed, W [n, n] receives the eigenvectors as rows.</summary>
    public static void Solve(double[] d, double[] e, int n, double[] w, int threads)
    {
        Array.Clear(w);
        Block(d, e, w, n, 0, n, threads);
    }

    /// <summary>The sub-problem on rows and columns [start, start + size) of T, written into the same block of W.</summary>
    static void Block(double[] d, double[] e, double[] w, int n, int start, int size, int threads)
    {
        if (size <= LeafSize)
        {
            Leaf(d, e, w, n, start, size);
            return;
        }
        // Tear: T = diag(T₁, T₂) + ρ·u·uᵀ with u = e_{k−1} + sign(β)·e_k and ρ = |β|, β the coupling entry.
        int first = size / 2, k = start + first;
        double rho = Math.Abs(e[k - 1]);
        d[k - 1] -= rho;
        d[k] -= rho;
        if (size >= ParallelSize && threads > 1)
            Parallel.Invoke(new ParallelOptions { MaxDegreeOfParallelism = 2 },
                () => Block(d, e, w, n, start, first, Math.Max(1, threads / 2)),
                () => Block(d, e, w, n, k, size - first, Math.Max(1, threads - threads / 2)));
        else
        {
            Block(d, e, w, n, start, first, threads);
            Block(d, e, w, n, k, size - first, threads);
        }
        Merge(d, w, n, start, first, size, rho, Math.Sign(e[k - 1]) >= 0 ? 1 : -1, threads);
    }

    static void Leaf(double[] d, double[] e, double[] w, int n, int start, int size)
    {
        var leafD = d.AsSpan(start, size).ToArray();
        var leafE = size > 1 ? e.AsSpan(start, size - 1).ToArray() : new double[1];
        var leafW = new double[size * size];
        for (int i = 0; i < size; i++) leafW[i * size + i] = 1;
        TridiagonalQr.Solve(leafD, leafE, size, leafW, 1);
        leafD.CopyTo(d, start);
        for (int i = 0; i < size; i++) leafW.AsSpan(i * size, size).CopyTo(w.AsSpan((start + i) * n + start, size));
    }

    /// <summary>
    /// Merges the solved halves [start, start+first) and [start+first, start+size) (LAPACK dlaed1–dlaed3). Row j of
    /// the block is an eigenvector of its half with eigenvalue d[start+j]; on return the rows are the merged problem's.
    /// </summary>
    static void Merge(double[] d, double[] w, int n, int start, int first, int size, double rho, int sign, int threads)
    {
        // z: each eigenvector's entry at the tear (T₁'s last row, T₂'s first, the latter with β's sign), scaled to unit norm.
        var z = new double[size];
        var poles = new double[size];
        for (int j = 0; j < size; j++)
        {
            z[j] = j < first ? w[(start + j) * n + start + first - 1] : sign * w[(start + j) * n + start + first];
            z[j] *= Math.Sqrt(0.5);
            poles[j] = d[start + j];
        }
        rho *= 2;
        // Rows of the block as a local copy, [size, size]: row j is vector j restricted to the block's columns.
        var rows = new double[size * size];
        for (int j = 0; j < size; j++) w.AsSpan((start + j) * n + start, size).CopyTo(rows.AsSpan(j * size, size));
        // Which half's columns each row can be non-zero in: 1 = first half, 2 = second, 3 = both (after a deflating rotation).
        var halves = new byte[size];
        for (int j = 0; j < size; j++) halves[j] = j < first ? (byte)1 : (byte)2;

        var order = Enumerable.Range(0, size).ToArray();
        Array.Sort(order, (x, y) => poles[x].CompareTo(poles[y]));
        double maxPole = 0;
        foreach (var p in poles) maxPole = Math.Max(maxPole, Math.Abs(p));
        double tolerance = 8 * Epsilon * Math.Max(maxPole, rho);

        // Deflation (dlaed2): a negligible z_j leaves (d_j, row j) as an eigenpair; two poles closer than the tolerance
        // allows are rotated so that one z vanishes and that one is deflated.
        var kept = new List<int>(size);
        var deflated = new List<int>();
        int previous = -1;
        foreach (int j in order)
        {
            if (rho * Math.Abs(z[j]) <= tolerance)
            {
                deflated.Add(j);
                continue;
            }
            if (previous >= 0)
            {
                double r = double.Hypot(z[previous], z[j]), c = z[j] / r, s = -z[previous] / r;
                if (Math.Abs((poles[j] - poles[previous]) * c * s) <= tolerance)
                {
                    // G = [c s; −s c] on (previous, j) maps (z_p, z_j) to (0, r).
                    z[previous] = 0;
                    z[j] = r;
                    double dp = poles[previous], dj = poles[j];
                    poles[previous] = dp * c * c + dj * s * s;
                    poles[j] = dp * s * s + dj * c * c;
                    var rp = rows.AsSpan(previous * size, size);
                    var rj = rows.AsSpan(j * size, size);
                    for (int t = 0; t < size; t++)
                    {
                        double a = rp[t], b = rj[t];
                        rp[t] = c * a + s * b;
                        rj[t] = c * b - s * a;
                    }
                    halves[previous] = halves[j] = (byte)(halves[previous] | halves[j]);
                    deflated.Add(previous);
                    kept.RemoveAt(kept.Count - 1);
                }
            }
            kept.Add(j);
            previous = j;
        }
        // The rotations may have nudged the kept poles out of order.
        kept.Sort((x, y) => poles[x].CompareTo(poles[y]));

        int count = kept.Count;
        var keptPoles = kept.Select(j => poles[j]).ToArray();
        var keptZ = kept.Select(j => z[j]).ToArray();
        // differences[i·count + j] = d_j − λ_i, each formed against the pole nearest λ_i (so the small ones are exact).
        var differences = new double[count * count];
        var roots = new double[count];
        Parallel.For(0, count, new ParallelOptions { MaxDegreeOfParallelism = threads },
            i => roots[i] = SecularEquation.Root(i, keptPoles, keptZ, rho, differences.AsSpan(i * count, count)));

        // Gu–Eisenstat: the z for which the computed roots are exact eigenvalues of D + ρ·ẑ·ẑᵀ (Löwner's formula).
        // ẑ_j² = |Π_i (d_j − λ_i) / Π_{i≠j} (d_j − d_i)|, root i's factor paired with pole i's so the running product
        // stays near 1; taken a row of differences at a time (all j for one root i), so the matrix is read in order.
        var zHat = new double[count];
        for (int j = 0; j < count; j++) zHat[j] = differences[j * count + j];
        for (int i = 0; i < count; i++)
        {
            var row = differences.AsSpan(i * count, count);
            double pole = keptPoles[i];
            for (int j = 0; j < count; j++)
                if (j != i) zHat[j] *= row[j] / (keptPoles[j] - pole);
        }
        for (int j = 0; j < count; j++) zHat[j] = Math.CopySign(Math.Sqrt(Math.Abs(zHat[j])), keptZ[j]);
        // Eigenvector i of D + ρ·ẑ·ẑᵀ: ẑ_j / (d_j − λ_i), normalized; as rows of `vectors` [count, count].
        var vectors = new double[count * count];
        Parallel.For(0, count, new ParallelOptions { MaxDegreeOfParallelism = threads }, i =>
        {
            var v = vectors.AsSpan(i * count, count);
            for (int j = 0; j < count; j++) v[j] = zHat[j] / differences[i * count + j];
            TensorPrimitives.Multiply(v, 1 / TensorPrimitives.Norm<double>(v), v);
        });

        // New rows = vectors · (kept rows), by halves of the columns: a row confined to one half contributes only there.
        var merged = new double[size * size];
        MultiplyHalf(vectors, count, kept, halves, rows, size, 0, first, 1, merged, threads);
        MultiplyHalf(vectors, count, kept, halves, rows, size, first, size - first, 2, merged, threads);
        for (int i = 0; i < count; i++) d[start + i] = roots[i];
        for (int t = 0; t < deflated.Count; t++)
        {
            int j = deflated[t];
            d[start + count + t] = poles[j];
            rows.AsSpan(j * size, size).CopyTo(merged.AsSpan((count + t) * size, size));
        }
        for (int i = 0; i < size; i++) merged.AsSpan(i * size, size).CopyTo(w.AsSpan((start + i) * n + start, size));
    }

    /// <summary>
    /// merged[0..count, column0 + (0..width)] = vectors · rows[kept, column0 + (0..width)], over only the kept rows
    /// that reach this half (<paramref name="half"/> set in <paramref name="halves"/>).
    /// </summary>
    static void MultiplyHalf(double[] vectors, int count, List<int> kept, byte[] halves, double[] rows, int size,
        int column0, int width, byte half, double[] merged, int threads)
    {
        var used = Enumerable.Range(0, count).Where(i => (halves[kept[i]] & half) != 0).ToArray();
        if (used.Length == 0) return;
        var left = new double[count * used.Length];   // vectors[:, used]
        var right = new double[used.Length * width];  // rows[kept[used], column0…]
        for (int i = 0; i < count; i++)
            for (int t = 0; t < used.Length; t++) left[i * used.Length + t] = vectors[i * count + used[t]];
        for (int t = 0; t < used.Length; t++) rows.AsSpan(kept[used[t]] * size + column0, width).CopyTo(right.AsSpan(t * width, width));
        fixed (double* pm = merged, pl = left, pr = right)
            BlockedGemm.MultiplyAdd(pm + column0, size, pl, used.Length, false, pr, width, false, count, width, used.Length, 1.0, threads);
    }
}
