"""numpy's side of the SVD benchmark (docs/BENCHMARKS.md, "SVD (issue 13)").

Times numpy.linalg.svd (LAPACK gesdd) on the matrix the C# benchmark wrote, singular values only and thin U·S·Vᵀ,
in float32 and float64, and compares the C# singular values with numpy's when they are there.

    /usr/bin/python3 bench/svd_numpy.py MATRIX.f32 ROWS COLUMNS [OURS.f64] [--reps N] [--dtypes float32,float64]

MATRIX.f32 is the raw little-endian float32 matrix, row-major; OURS.f64 the C# singular values as raw float64.
The reconstruction error is measured over 256 random rows, as the C# benchmark does.
"""
import sys, time
import numpy as np

args = [a for a in sys.argv[1:] if not a.startswith("--")]
opts = dict(zip(sys.argv[1:], sys.argv[2:]))
path, rows, cols = args[0], int(args[1]), int(args[2])
ours_path = args[3] if len(args) > 3 else None
reps = int(opts.get("--reps", 1))
dtypes = opts.get("--dtypes", "float32,float64").split(",")

a32 = np.fromfile(path, dtype=np.float32).reshape(rows, cols)
print(f"numpy {np.__version__}, matrix {rows}x{cols}")
ref = None
for dtype in dtypes:
    a = a32.astype(dtype)
    best_values = best_full = float("inf")
    for _ in range(reps):
        t = time.perf_counter(); s = np.linalg.svd(a, compute_uv=False); best_values = min(best_values, time.perf_counter() - t)
        t = time.perf_counter(); u, s2, vt = np.linalg.svd(a, full_matrices=False); best_full = min(best_full, time.perf_counter() - t)
    rows_checked = np.random.default_rng(13).integers(0, rows, 256)
    sample = a[rows_checked].astype(np.float64)
    err = np.linalg.norm(sample - (u[rows_checked].astype(np.float64) * s2) @ vt.astype(np.float64)) / np.linalg.norm(sample)
    print(f"numpy {dtype}: singular values {best_values:.2f} s, thin SVD {best_full:.2f} s, ||A - USV'||_F/||A||_F over 256 rows = {err:.2e}", flush=True)
    if dtype == "float64":
        ref = s2
if ours_path and ref is not None:
    ours = np.fromfile(ours_path, dtype=np.float64)
    rel = np.abs(ours - ref) / ref
    print(f"ours vs numpy float64: max relative difference, top 10 {rel[:10].max():.2e}, top 100 {rel[:100].max():.2e}, all {rel.max():.2e}")
