namespace LlmShrink.Kernels;

/// <summary>A weight matrix stored in some compact form that can decode any stretch of a row to float32.</summary>
public unsafe interface IRowDecoder
{
    /// <summary>Elements [k0, k0 + len) of W row <paramref name="row"/> as float32 into <paramref name="destination"/>.</summary>
    void DecodeRow(int row, int k0, int len, float* destination);
}

/// <summary>
/// The prompt (n &gt; 1) path of every packed weight format: y[n, out] = x[n, in]·Wᵀ with W decoded a tile at a time.
/// A prompt is bound by arithmetic, not by reading W, so the compact form buys nothing there; what matters is to run
/// the same register-blocked micro-kernel as float32 (<see cref="MatMul.AddProducts"/>). Each worker owns a range of W
/// rows and, for each tile of <see cref="TileRows"/> rows × <see cref="MatMul.SliceK"/> inputs (256 KB: it stays in
/// L2 beside a 256 KB block of x), decodes the tile once into its own buffer and multiplies every x row with it.
/// Decoding is O(out·in) per call against O(n·out·in) multiply-adds.
/// </summary>
public static unsafe class TiledGemm
{
    public const int TileRows = 64;

    [ThreadStatic] private static Job? t_job;

    /// <summary><paramref name="x"/> [n, inDim] and <paramref name="y"/> [n, outDim], row-major; y is overwritten.</summary>
    public static void Multiply(IRowDecoder w, float* x, float* y, int n, int inDim, int outDim, WorkerPool? pool = null, int threads = 0)
    {
        pool ??= WorkerPool.Shared;
        var job = t_job ??= new Job();
        job.W = w; job.X = AlignedRows.Of(x, (long)n * inDim); job.Y = y; job.N = n; job.In = inDim; job.Out = outDim;
        job.EnsureTiles(pool.Threads);
        pool.For((outDim + TileRows - 1) / TileRows, job, threads);
        job.W = null; job.X = job.Y = null;
    }

    private sealed class Job : IParallelWork
    {
        public IRowDecoder? W;
        public float* X, Y;
        public int N, In, Out;
        private float[][] _tiles = [];

        public void EnsureTiles(int workers)
        {
            if (_tiles.Length < workers) Array.Resize(ref _tiles, workers);
            for (int w = 0; w < workers; w++) _tiles[w] ??= GC.AllocateUninitializedArray<float>(TileRows * MatMul.SliceK + AlignedRows.Alignment / sizeof(float), pinned: true);
        }

        public void Execute(int begin, int end, int worker)
        {
            int first = begin * TileRows, last = Math.Min(end * TileRows, Out), width = MatMul.SliceK;
            for (int i = 0; i < N; i++) new Span<float>(Y + (long)i * Out + first, last - first).Clear();
            fixed (float* buffer = _tiles[worker])
            {
                float* tile = AlignedRows.Align(buffer); // rows of 1024 floats: every row on a cache line boundary
                for (int t0 = first; t0 < last; t0 += TileRows)
                {
                    int rows = Math.Min(TileRows, last - t0);
                    for (int k0 = 0; k0 < In; k0 += width)
                    {
                        int len = Math.Min(width, In - k0);
                        for (int r = 0; r < rows; r++) W!.DecodeRow(t0 + r, k0, len, tile + r * width);
                        MatMul.AddProducts(X + k0, In, tile, width, Y + t0, Out, N, rows, len);
                    }
                }
            }
        }
    }
}
