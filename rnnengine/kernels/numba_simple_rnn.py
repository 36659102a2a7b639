"""SimpleRNN forward kernel in Numba. Contract: see ``rnnengine/kernels/__init__.py``."""
import numpy as np
from numba import njit

from ..config import FASTMATH_FLAGS
from ._activations import apply


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS)
def _simple_rnn_forward(y_out, h, xproj, rec, x, kernel, recurrent_kernel, bias,
                        B, T, C, H, activation, go_backwards, return_sequences):
    # y_out is (B, T or 1, H); h is (B, H), initial state in, final state out;
    # xproj is (B, T, H); rec is (B, H); x is (B, T, C);
    # kernel is (C, H); recurrent_kernel is (H, H); bias is (H,)
    # One GEMM projects every timestep: xproj = x @ kernel.
    np.dot(x.reshape((B * T, C)), kernel, xproj.reshape((B * T, H)))
    for s in range(T):
        t = T - 1 - s if go_backwards else s
        np.dot(h, recurrent_kernel, rec)  # rec = h_tm1 @ recurrent_kernel
        for b in range(B):
            for j in range(H):
                h[b, j] = apply(activation, xproj[b, t, j] + bias[j] + rec[b, j])
        if return_sequences:
            for b in range(B):
                for j in range(H):
                    y_out[b, s, j] = h[b, j]
    if not return_sequences:
        for b in range(B):
            for j in range(H):
                y_out[b, 0, j] = h[b, j]
