using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LlmShrink.LinearAlgebra;

/// <summary>
/// float64 C += α·op(A)·op(B), op = identity or transpose, row-major with leading dimensions: the GEMM under the SVD
/// and the eigensolver (Gram matrix, blocked tridiagonalization and back-transformation, A's projection on the
/// eigenvectors). GotoBLAS-style (Goto &amp; van de Geijn 2008): C is cut into <see cref="TileRows"/>×<see cref="TileColumns"/>
/// tiles, the parallel work items, and each tile walks k in slices of <see cref="SliceK"/>. A slice of α·op(B) is packed
/// into 32-column micro-panels [k][32], zero-padded, so the micro-kernel streams it contiguously whatever B's layout;
/// op(A) is read in place, four rows at a time (contiguous along k, as the hardware prefetcher likes), and only a
/// transposed A is first packed into 4-row micro-panels [k][4]. Packing is scalar copying, so it must be rare: each packed
/// slice of B serves all <see cref="TileRows"/> rows of its tile. The micro-kernel keeps a 4×32 block of C in 16
/// Vector512 registers: 16 FMAs per step of k for 4 vector loads and 4 broadcasts (measured at ~85 % of the core's two
/// 512-bit FMAs per cycle). A 32-column micro-panel of a slice (32 KB) stays in L1 while the tile's rows pass it, and the
/// tile's slice of A (512 KB) stays in L2. Each tile reads (512 + 256)·k values for 512·256·k FMAs, so main memory is
/// never the limit.
/// </summary>
static unsafe class BlockedGemm
{
    /// <summary>Which part of C a call must produce: all of it, or (for a symmetric result) one triangle.</summary>
    public enum Triangle { Full, Lower, Upper }

    const int MicroRows = 4, MicroColumns = 32, TileRows = 512, TileColumns = 256, SliceK = 128;

    /// <summary>
    /// C [m, n] += α·op(A)·op(B) with op(A) [m, k] and op(B) [k, n]. A is read as a[i·lda + p] (or a[p·lda + i] when
    /// <paramref name="transA"/>), B as b[p·ldb + j] (or b[j·ldb + p] when <paramref name="transB"/>). With
    /// <paramref name="triangle"/> other than <see cref="Triangle.Full"/> (m = n, for symmetric results) tiles wholly
    /// outside that triangle are skipped; tiles that cross the diagonal are computed whole, so some entries of the
    /// other triangle change and the rest do not.
    /// </summary>
    public static void MultiplyAdd(double* c, int ldc, double* a, int lda, bool transA, double* b, int ldb, bool transB,
        int m, int n, int k, double alpha, int threads, Triangle triangle = Triangle.Full)
    {
        if (m <= 0 || n <= 0 || k <= 0) return;
        int rowTiles = (m + TileRows - 1) / TileRows, columnTiles = (n + TileColumns - 1) / TileColumns;
        // Work items in order; for a triangular product, only tiles that reach the triangle.
        var items = new List<(int Row, int Column)>(rowTiles * columnTiles);
        for (int r = 0; r < rowTiles; r++)
            for (int t = 0; t < columnTiles; t++)
            {
                long row0 = (long)r * TileRows, column0 = (long)t * TileColumns;
                bool reaches = triangle switch
                {
                    Triangle.Lower => column0 < row0 + TileRows,
                    Triangle.Upper => column0 + TileColumns > row0,
                    _ => true,
                };
                if (reaches) items.Add(((int)row0, (int)column0));
            }
        var job = new Operands(c, ldc, a, lda, transA, b, ldb, transB, m, n, k, alpha);
        var options = new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, threads) };
        Parallel.For(0, items.Count, options, () => new Buffers(),
            (i, _, buffers) =>
            {
                Tile(job, items[i].Row, items[i].Column, buffers);
                return buffers;
            }, _ => { });
    }

    /// <summary>The operands of one call, shared by its work items.</summary>
    sealed class Operands(double* c, int ldc, double* a, int lda, bool transA, double* b, int ldb, bool transB,
        int m, int n, int k, double alpha)
    {
        public readonly double* C = c, A = a, B = b;
        public readonly int Ldc = ldc, Lda = lda, Ldb = ldb, M = m, N = n, K = k;
        public readonly bool TransA = transA, TransB = transB;
        public readonly double Alpha = alpha;
    }

    /// <summary>One thread's packed slices and a zero row for the missing rows of an edge, pinned for the micro-kernel.</summary>
    sealed class Buffers
    {
        public readonly double[] A = GC.AllocateUninitializedArray<double>(TileRows * SliceK, pinned: true);
        public readonly double[] B = GC.AllocateUninitializedArray<double>(TileColumns * SliceK, pinned: true);
        public readonly double[] Edge = GC.AllocateUninitializedArray<double>(MicroRows * MicroColumns, pinned: true);
        public readonly double[] Zeros = GC.AllocateArray<double>(SliceK, pinned: true);
    }

    static void Tile(Operands o, int row0, int column0, Buffers buffers)
    {
        int rows = Math.Min(TileRows, o.M - row0), columns = Math.Min(TileColumns, o.N - column0);
        int rowPanels = (rows + MicroRows - 1) / MicroRows, columnPanels = (columns + MicroColumns - 1) / MicroColumns;
        fixed (double* pa = buffers.A, pb = buffers.B, edge = buffers.Edge, zeros = buffers.Zeros)
            for (int p0 = 0; p0 < o.K; p0 += SliceK)
            {
                int depth = Math.Min(SliceK, o.K - p0);
                if (o.TransA) PackA(o, row0, rows, p0, depth, pa);
                PackB(o, column0, columns, p0, depth, pb);
                for (int jp = 0; jp < columnPanels; jp++)
                {
                    double* bPanel = pb + (long)jp * depth * MicroColumns;
                    int j = column0 + jp * MicroColumns, width = Math.Min(MicroColumns, columns - jp * MicroColumns);
                    for (int ip = 0; ip < rowPanels; ip++)
                    {
                        int i = row0 + ip * MicroRows, height = Math.Min(MicroRows, rows - ip * MicroRows);
                        // The four rows of op(A) for this micro-panel: packed ([k][4]) or in place (rows lda apart).
                        double* a0, a1, a2, a3;
                        int step;
                        if (o.TransA)
                        {
                            a0 = pa + (long)ip * depth * MicroRows;
                            a1 = a0 + 1;
                            a2 = a0 + 2;
                            a3 = a0 + 3;
                            step = MicroRows;
                        }
                        else
                        {
                            a0 = o.A + (long)i * o.Lda + p0;
                            a1 = height > 1 ? a0 + o.Lda : zeros;
                            a2 = height > 2 ? a0 + 2L * o.Lda : zeros;
                            a3 = height > 3 ? a0 + 3L * o.Lda : zeros;
                            step = 1;
                        }
                        double* ct = o.C + (long)i * o.Ldc + j;
                        if (height == MicroRows && width == MicroColumns)
                        {
                            MicroKernel(ct, o.Ldc, a0, a1, a2, a3, step, bPanel, depth);
                            continue;
                        }
                        // Edge: run the same kernel on a copy of the valid part of C.
                        new Span<double>(edge, MicroRows * MicroColumns).Clear();
                        for (int r = 0; r < height; r++)
                            new ReadOnlySpan<double>(ct + (long)r * o.Ldc, width).CopyTo(new Span<double>(edge + r * MicroColumns, width));
                        MicroKernel(edge, MicroColumns, a0, a1, a2, a3, step, bPanel, depth);
                        for (int r = 0; r < height; r++)
                            new ReadOnlySpan<double>(edge + r * MicroColumns, width).CopyTo(new Span<double>(ct + (long)r * o.Ldc, width));
                    }
                }
            }
    }

    /// <summary>A transposed op(A)[row0.., p0..] → micro-panels [rows/4][depth][4], rows past the edge zero.</summary>
    static void PackA(Operands o, int row0, int rows, int p0, int depth, double* packed)
    {
        int panels = (rows + MicroRows - 1) / MicroRows;
        for (int ip = 0; ip < panels; ip++)
        {
            double* dst = packed + (long)ip * depth * MicroRows;
            for (int r = 0; r < MicroRows; r++)
            {
                int i = ip * MicroRows + r;
                if (i >= rows)
                {
                    for (int p = 0; p < depth; p++) dst[p * MicroRows + r] = 0;
                    continue;
                }
                double* src = o.A + (long)p0 * o.Lda + row0 + i;
                for (int p = 0; p < depth; p++) dst[p * MicroRows + r] = src[(long)p * o.Lda];
            }
        }
    }

    /// <summary>α·op(B)[p0.., column0..] → micro-panels [columns/32][depth][32], columns past the edge zero.</summary>
    static void PackB(Operands o, int column0, int columns, int p0, int depth, double* packed)
    {
        int panels = (columns + MicroColumns - 1) / MicroColumns;
        double alpha = o.Alpha;
        for (int jp = 0; jp < panels; jp++)
        {
            double* dst = packed + (long)jp * depth * MicroColumns;
            int j0 = column0 + jp * MicroColumns, width = Math.Min(MicroColumns, columns - jp * MicroColumns);
            if (!o.TransB)
            {
                for (int p = 0; p < depth; p++)
                {
                    var row = new Span<double>(dst + p * MicroColumns, MicroColumns);
                    System.Numerics.Tensors.TensorPrimitives.Multiply(new ReadOnlySpan<double>(o.B + (long)(p0 + p) * o.Ldb + j0, width), alpha, row[..width]);
                    if (width < MicroColumns) row[width..].Clear();
                }
                continue;
            }
            for (int j = 0; j < MicroColumns; j++)
            {
                if (j >= width)
                {
                    for (int p = 0; p < depth; p++) dst[p * MicroColumns + j] = 0;
                    continue;
                }
                double* src = o.B + (long)(j0 + j) * o.Ldb + p0;
                for (int p = 0; p < depth; p++) dst[p * MicroColumns + j] = alpha * src[p];
            }
        }
    }

    /// <summary>C[0..4, 0..32) += Σ_p a_r[p·step]·b[p][:], the register-blocked inner loop.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void MicroKernel(double* c, int ldc, double* a0, double* a1, double* a2, double* a3, int step, double* b, int depth)
    {
        double* c1 = c + ldc, c2 = c1 + ldc, c3 = c2 + ldc;
        Vector512<double> c00 = Vector512.Load(c), c01 = Vector512.Load(c + 8), c02 = Vector512.Load(c + 16), c03 = Vector512.Load(c + 24);
        Vector512<double> c10 = Vector512.Load(c1), c11 = Vector512.Load(c1 + 8), c12 = Vector512.Load(c1 + 16), c13 = Vector512.Load(c1 + 24);
        Vector512<double> c20 = Vector512.Load(c2), c21 = Vector512.Load(c2 + 8), c22 = Vector512.Load(c2 + 16), c23 = Vector512.Load(c2 + 24);
        Vector512<double> c30 = Vector512.Load(c3), c31 = Vector512.Load(c3 + 8), c32 = Vector512.Load(c3 + 16), c33 = Vector512.Load(c3 + 24);
        for (int p = 0; p < depth; p++, b += MicroColumns)
        {
            Vector512<double> b0 = Vector512.Load(b), b1 = Vector512.Load(b + 8), b2 = Vector512.Load(b + 16), b3 = Vector512.Load(b + 24);
            long at = (long)p * step;
            var x = Vector512.Create(a0[at]);
            c00 = Vector512.FusedMultiplyAdd(x, b0, c00); c01 = Vector512.FusedMultiplyAdd(x, b1, c01);
            c02 = Vector512.FusedMultiplyAdd(x, b2, c02); c03 = Vector512.FusedMultiplyAdd(x, b3, c03);
            x = Vector512.Create(a1[at]);
            c10 = Vector512.FusedMultiplyAdd(x, b0, c10); c11 = Vector512.FusedMultiplyAdd(x, b1, c11);
            c12 = Vector512.FusedMultiplyAdd(x, b2, c12); c13 = Vector512.FusedMultiplyAdd(x, b3, c13);
            x = Vector512.Create(a2[at]);
            c20 = Vector512.FusedMultiplyAdd(x, b0, c20); c21 = Vector512.FusedMultiplyAdd(x, b1, c21);
            c22 = Vector512.FusedMultiplyAdd(x, b2, c22); c23 = Vector512.FusedMultiplyAdd(x, b3, c23);
            x = Vector512.Create(a3[at]);
            c30 = Vector512.FusedMultiplyAdd(x, b0, c30); c31 = Vector512.FusedMultiplyAdd(x, b1, c31);
            c32 = Vector512.FusedMultiplyAdd(x, b2, c32); c33 = Vector512.FusedMultiplyAdd(x, b3, c33);
        }
        c00.Store(c); c01.Store(c + 8); c02.Store(c + 16); c03.Store(c + 24);
        c10.Store(c1); c11.Store(c1 + 8); c12.Store(c1 + 16); c13.Store(c1 + 24);
        c20.Store(c2); c21.Store(c2 + 8); c22.Store(c2 + 16); c23.Store(c2 + 24);
        c30.Store(c3); c31.Store(c3 + 8); c32.Store(c3 + 16); c33.Store(c3 + 24);
    }
}
