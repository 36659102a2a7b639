"""Pieces the Numba inference kernels share: the per-step recurrent product and
the step output copy. Contract of the kernels: ``kernels/__init__.py``."""
import numpy as np
from numba import njit

from . import _numba_cache  # noqa: F401  (an installed package caches outside itself)
from ..config import FASTMATH_FLAGS

# Up to this many rows, the recurrent product is a plain loop (axpy over rows
# of the weight matrix, which LLVM vectorizes); above it, BLAS GEMM. A BLAS call
# costs about a microsecond of set-up, more than a batch-1 LSTM-128 step's math.
SMALL_BATCH = 4


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS, error_model="numpy")
def recurrent_product(out, h, weights, B, H, N):
    # out is (B, N) = h (B, H) @ weights (H, N)
    if B > SMALL_BATCH:
        np.dot(h, weights, out)
        return
    for b in range(B):
        o = out[b]
        for j in range(N):
            o[j] = 0.0
        for k in range(H):
            hk = h[b, k]
            w = weights[k]
            for j in range(N):
                o[j] += hk * w[j]


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS, error_model="numpy")
def write_step(y_out, h, s, B, H, T, return_sequences):
    # y_out[:, s] = h for every step with return_sequences, else y_out[:, 0] = h after the last
    if return_sequences:
        for b in range(B):
            y_out[b, s] = h[b]
    elif s == T - 1:
        for b in range(B):
            y_out[b, 0] = h[b]
