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
def step_runs(keep, t, B):
    # Whether step t has a row to compute: always without a mask (keep empty);
    # with one, when some row's keep[b, t] is set (trailing padding costs no product).
    if keep.shape[0] == 0:
        return True
    for b in range(B):
        if keep[b, t]:
            return True
    return False


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS, error_model="numpy")
def write_step(y_out, h, keep, s, t, B, H, T, return_sequences, zero_output_for_mask):
    # y_out[:, s] = h for every step with return_sequences, else y_out[:, 0] = h
    # after the last. With a mask (Keras's rule): a masked step's output repeats
    # the previous step's (zeros before the first valid step), or is zeros with
    # zero_output_for_mask; the last output is the last step's such output.
    masked = keep.shape[0] > 0
    if return_sequences:
        for b in range(B):
            if not masked or keep[b, t]:
                y_out[b, s] = h[b]
            elif zero_output_for_mask or s == 0:
                y_out[b, s] = 0.0
            else:
                y_out[b, s] = y_out[b, s - 1]
    elif s == T - 1:
        for b in range(B):
            valid = not masked or keep[b, t]
            if masked and not zero_output_for_mask:
                for u in range(T):
                    valid = valid or keep[b, u]
            if valid:
                y_out[b, 0] = h[b]
            else:
                y_out[b, 0] = 0.0
