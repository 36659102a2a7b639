"""The per-step recurrent product alone: rnnengine's float32 step kernel
(src/_rec_gemm.h, through rnnengine.kernels._cy_blas.fused_step_product)
against NumPy's matmul (OpenBLAS sgemm, which repacks W on every call), one
thread each, at the shapes a thread sees in the standard workloads.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/step_kernel.py

Batch-1 rows (M = 1) are not the step kernel's (B <= 4 uses the axpy loop of
src/_blas.pxd); they are listed as bytes of W a second, the bound there.
"""
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from rnnengine.kernels import _cy_blas

SHAPES = [  # (M rows per thread, K, N): what a step of one thread multiplies
    (16, 256, 1024, "T2 LSTM step, 2 threads (h @ W_rec)"),
    (16, 256, 768, "T2 GRU step, 2 threads"),
    (128, 256, 1024, "T1 LSTM step, 2 threads"),
    (8, 128, 512, "B=16 LSTM-128 step, 2 threads"),
    (1, 128, 512, "L1 LSTM step (batch 1)"),
    (1, 128, 384, "L1 GRU step (batch 1)"),
]


def _median_us(f, min_time=0.3):
    f()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_time or len(times) < 20:
        t0 = time.perf_counter_ns()
        f()
        times.append(time.perf_counter_ns() - t0)
    return float(np.median(times)) / 1e3


def main():
    threadpool_limits(1)
    blas = [(i["internal_api"], i.get("architecture"), i["num_threads"]) for i in threadpool_info()]
    print(f"BLAS (threadpoolctl): {blas}")
    rng = np.random.default_rng(0)
    print("| shape | M | K | N | numpy sgemm µs | GFLOP/s | step kernel µs | GFLOP/s | numpy / kernel |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for M, K, N, what in SHAPES:
        h = rng.standard_normal((M, K)).astype(np.float32)
        w = rng.standard_normal((K, N)).astype(np.float32)
        out = np.empty((M, N), np.float32)
        t_np = _median_us(lambda: np.matmul(h, w, out=out))
        empty = np.zeros((M, 0), np.float32)
        none = np.zeros((0, N), np.float32)
        bias = np.zeros(0, np.float32)
        t_k = _median_us(lambda: _cy_blas.fused_step_product(out, bias, empty, none, h, w))
        np.testing.assert_allclose(out, h.astype(np.float64) @ w, rtol=0, atol=1e-3)
        gf = 2 * M * K * N / 1e3
        print(f"| {what} | {M} | {K} | {N} | {t_np:.2f} | {gf / t_np:.1f} | {t_k:.2f} | "
              f"{gf / t_k:.1f} | {t_np / t_k:.2f} |")
        if M == 1:
            print(f"|  (batch 1: W streamed at {4 * K * N / t_np / 1e3:.0f} GB/s by numpy, "
                  f"{4 * K * N / t_k / 1e3:.0f} GB/s by the tiled kernel) | | | | | | | | |")


if __name__ == "__main__":
    main()
