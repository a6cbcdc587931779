using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LlmShrink.LinearAlgebra;

/// <summary>
/// Accumulates GPTQ's layer Hessian H = (2/n) Σ_t x_t x_tᵀ over the n calibration tokens that reach one linear
/// layer (Frantar et al. 2022, §3: the Hessian of ‖WX − ŴX‖² is 2XXᵀ; the reference averages it over tokens).
///
/// Precision: products are summed in float32 over at most <see cref="TokenBlock"/> tokens at a time, and
/// each such partial sum is added into a float64 accumulator. float32 alone would lose the small
/// contributions of late batches once H holds hundreds of thousands of tokens; float64 throughout would
/// halve the vector width. Only the upper triangle is computed; <see cref="ToHessian"/> mirrors it.
///
/// Hot loop: a symmetric rank-k update (SYRK) done GEMM-style. A block of tokens is repacked into
/// 16-column panels [panel][token][16]; an 8-row × 32-column tile of XᵀX lives in 16 Vector512 registers
/// and each token costs 2 vector loads, 8 broadcasts and 16 FMAs.
/// </summary>
public sealed class HessianAccumulator
{
    /// <summary>Tokens summed in float32 before the partial sum goes into the float64 accumulator.</summary>
    public const int TokenBlock = 256;
    const int Lanes = 16, TileRows = 8, TileColumns = 32, ChunkColumns = 256;

    readonly double[] sum;        // Σ x xᵀ, upper triangle valid, [Columns, Columns]
    readonly int paddedColumns;   // Columns rounded up to a whole tile width
    float[]? panels;
    bool finished;

    public int Columns { get; }
    /// <summary>Tokens accumulated so far (n).</summary>
    public long Tokens { get; private set; }

    public HessianAccumulator(int columns)
    {
        if (columns <= 0) throw new ArgumentOutOfRangeException(nameof(columns));
        Columns = columns;
        paddedColumns = (columns + TileColumns - 1) / TileColumns * TileColumns;
        sum = new double[(long)columns * columns];
    }

    /// <summary>Adds the inputs of one calibration batch, X row-major [tokens, Columns].</summary>
    public void Add(ReadOnlySpan<float> x, int tokens)
    {
        if (x.Length != (long)tokens * Columns)
            throw new ArgumentException($"Hessian: input has {x.Length} values, not {tokens}×{Columns}");
        if (finished) throw new InvalidOperationException("Hessian: no inputs can be added after ToHessian");
        panels ??= new float[(long)paddedColumns * TokenBlock];
        for (int t0 = 0; t0 < tokens; t0 += TokenBlock)
        {
            int count = Math.Min(TokenBlock, tokens - t0);
            Pack(x.Slice(t0 * Columns, count * Columns), count);
            AddBlock(count);
        }
        Tokens += tokens;
    }

    /// <summary>
    /// H = (2/n) Σ x xᵀ as a full symmetric float64 matrix [Columns, Columns]. It is built in the accumulator's own
    /// storage (a 7B down_proj's is ~1 GB, so no second copy is made), which ends the accumulation: call it once, last.
    /// </summary>
    public double[] ToHessian()
    {
        if (finished) throw new InvalidOperationException("Hessian: ToHessian was already called");
        finished = true;
        panels = null;
        int n = Columns;
        double factor = Tokens > 0 ? 2.0 / Tokens : 0.0;
        for (int i = 0; i < n; i++)
        {
            sum[(long)i * n + i] *= factor;
            for (int j = i + 1; j < n; j++)
                sum[(long)j * n + i] = sum[(long)i * n + j] *= factor;
        }
        return sum;
    }

    /// <summary>X block [count, Columns] → panels [Columns/16][count][16], padding columns are zero.</summary>
    void Pack(ReadOnlySpan<float> block, int count)
    {
        var p = panels!;
        int panelCount = paddedColumns / Lanes;
        for (int panel = 0; panel < panelCount; panel++)
        {
            int col0 = panel * Lanes, width = Math.Min(Lanes, Columns - col0);
            int baseIndex = panel * count * Lanes;
            for (int t = 0; t < count; t++)
            {
                var dst = p.AsSpan(baseIndex + t * Lanes, Lanes);
                if (width > 0) block.Slice(t * Columns + col0, width).CopyTo(dst);
                if (width < Lanes) dst[Math.Max(width, 0)..].Clear();
            }
        }
    }

    void AddBlock(int count)
    {
        // Column chunks write disjoint columns of the sum, so both cores take chunks; chunks further right cover more of
        // the upper triangle, so they are handed out heaviest first and dynamically.
        int chunks = (paddedColumns + ChunkColumns - 1) / ChunkColumns;
        Parallel.For(0, chunks, k => AddChunk(count, (chunks - 1 - k) * ChunkColumns));
    }

    unsafe void AddChunk(int count, int jc)
    {
        Span<float> tile = stackalloc float[TileRows * TileColumns];
        fixed (float* p = panels)
        fixed (double* s = sum)
        fixed (float* pt = tile)
        {
            int stride = count * Lanes; // floats per panel
            // One column chunk keeps its B panels (count × 256 floats) hot in L2 while the row tiles sweep.
            int jcEnd = Math.Min(jc + ChunkColumns, paddedColumns);
            for (int i0 = 0; i0 < Math.Min(jcEnd, Columns); i0 += TileRows)
            {
                float* a = p + (i0 / Lanes) * stride + (i0 % Lanes);
                // First column tile that reaches the diagonal (tiles left of it are lower-triangle only).
                int jStart = Math.Max(jc, i0 / TileColumns * TileColumns);
                for (int j0 = jStart; j0 < jcEnd; j0 += TileColumns)
                {
                    float* b = p + (j0 / Lanes) * stride;
                    Tile(a, b, b + stride, count, pt);
                    AddUpper(s, pt, i0, j0);
                }
            }
        }
    }

    unsafe void AddUpper(double* s, float* tile, int i0, int j0)
    {
        int n = Columns;
        for (int r = 0; r < TileRows && i0 + r < n; r++)
        {
            int i = i0 + r;
            int jFirst = Math.Max(j0, i), jLast = Math.Min(j0 + TileColumns, n);
            double* row = s + (long)i * n;
            float* t = tile + r * TileColumns - j0;
            for (int j = jFirst; j < jLast; j++) row[j] += t[j];
        }
    }

    /// <summary>tile[r, 0..32) = Σ_t a[t·16 + r] · (b0[t·16 ..] ‖ b1[t·16 ..]) for r in 0..8.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void Tile(float* a, float* b0, float* b1, int count, float* tile)
    {
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default;
        Vector512<float> c40 = default, c41 = default, c50 = default, c51 = default, c60 = default, c61 = default, c70 = default, c71 = default;
        for (int t = 0; t < count; t++, a += Lanes, b0 += Lanes, b1 += Lanes)
        {
            Vector512<float> x0 = Vector512.Load(b0), x1 = Vector512.Load(b1);
            Vector512<float> v = Vector512.Create(a[0]);
            c00 = Vector512.FusedMultiplyAdd(v, x0, c00); c01 = Vector512.FusedMultiplyAdd(v, x1, c01);
            v = Vector512.Create(a[1]);
            c10 = Vector512.FusedMultiplyAdd(v, x0, c10); c11 = Vector512.FusedMultiplyAdd(v, x1, c11);
            v = Vector512.Create(a[2]);
            c20 = Vector512.FusedMultiplyAdd(v, x0, c20); c21 = Vector512.FusedMultiplyAdd(v, x1, c21);
            v = Vector512.Create(a[3]);
            c30 = Vector512.FusedMultiplyAdd(v, x0, c30); c31 = Vector512.FusedMultiplyAdd(v, x1, c31);
            v = Vector512.Create(a[4]);
            c40 = Vector512.FusedMultiplyAdd(v, x0, c40); c41 = Vector512.FusedMultiplyAdd(v, x1, c41);
            v = Vector512.Create(a[5]);
            c50 = Vector512.FusedMultiplyAdd(v, x0, c50); c51 = Vector512.FusedMultiplyAdd(v, x1, c51);
            v = Vector512.Create(a[6]);
            c60 = Vector512.FusedMultiplyAdd(v, x0, c60); c61 = Vector512.FusedMultiplyAdd(v, x1, c61);
            v = Vector512.Create(a[7]);
            c70 = Vector512.FusedMultiplyAdd(v, x0, c70); c71 = Vector512.FusedMultiplyAdd(v, x1, c71);
        }
        c00.Store(tile); c01.Store(tile + 16); c10.Store(tile + 32); c11.Store(tile + 48);
        c20.Store(tile + 64); c21.Store(tile + 80); c30.Store(tile + 96); c31.Store(tile + 112);
        c40.Store(tile + 128); c41.Store(tile + 144); c50.Store(tile + 160); c51.Store(tile + 176);
        c60.Store(tile + 192); c61.Store(tile + 208); c70.Store(tile + 224); c71.Store(tile + 240);
    }
}
