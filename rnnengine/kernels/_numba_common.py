"""Pieces the Numba kernels share: the per-step recurrent product, the step
output copy and the mask's pieces of the training passes. Contract of the
kernels: ``kernels/__init__.py``."""
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


# -- the mask in the training passes (spec: reference._MaskRoute) ---------------------------

@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS, error_model="numpy")
def skip_row(h_tm1_seq, preact, gates, h, b, t):
    # forward_train, a masked row's step: its saved state is the carried one and
    # its preact and gates are zeros (finite, so the backward's derivative sweep
    # and weight GEMMs read numbers; its gradients there are zeros).
    for j in range(h.shape[1]):
        h_tm1_seq[b, t, j] = h[b, j]
    for k in range(preact.shape[2]):
        preact[b, t, k] = 0.0
        gates[b, t, k] = 0.0


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS, error_model="numpy")
def start_backward(dh0, dcarry, dy, dh_n, masked, B, H, return_sequences):
    # dh0 = dh_n (+ dy without return_sequences: y is the last h). With a mask,
    # dy of the last output enters through dcarry instead, the gradient of the
    # output a masked step carries back to the last valid step (zeros with
    # return_sequences, whose dy enters step by step).
    for b in range(B):
        for j in range(H):
            dh0[b, j] = dh_n[b, j]
            if masked:
                dcarry[b, j] = 0.0 if return_sequences else dy[b, 0, j]
            elif not return_sequences:
                dh0[b, j] += dy[b, 0, j]


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS, error_model="numpy")
def masked_dout(dcarry, dgates_t, dgates, dy, b, s, t, H, G, return_sequences, zero_output_for_mask):
    # backward, a masked row's step: the state gradients pass unchanged (the
    # caller leaves dh0, dc0 alone); forward: y_s = y_{s-1} (or 0 with
    # zero_output_for_mask), so y_s's gradient carries to the step before; no
    # gate gradient (the recurrent product and the weight GEMMs read zeros).
    for j in range(H):
        if zero_output_for_mask:
            dcarry[b, j] = 0.0
        elif return_sequences:
            dcarry[b, j] += dy[b, s, j]
    for k in range(G):
        dgates_t[b, k] = 0.0
        dgates[b, t, k] = 0.0


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS, error_model="numpy")
def step_dout(dcarry, dy, b, s, j, return_sequences):
    # backward, a valid row's step with a mask: the gradient w.r.t. its output,
    # dy plus what masked steps after it carried back; dcarry restarts at 0.
    d = dcarry[b, j] + dy[b, s, j] if return_sequences else dcarry[b, j]
    dcarry[b, j] = 0.0
    return d


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS, error_model="numpy")
def take_valid_rows(dst, src, keep, t, B, H):
    # dst[b] = src[b] for the rows that ran step t (a masked row's dh passes on).
    for b in range(B):
        if keep[b, t]:
            for j in range(H):
                dst[b, j] = src[b, j]
