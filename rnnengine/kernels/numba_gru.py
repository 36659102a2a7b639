"""GRU forward kernel in Numba (both reset_after variants).

Contract: see ``rnnengine/kernels/__init__.py``.
"""
import numpy as np
from numba import njit

from ..config import FASTMATH_FLAGS
from ._activations import apply


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS)
def _gru_forward(y_out, h, xproj, rec, rec_h, rh, x, kernel, recurrent_kernel,
                 recurrent_kernel_h, input_bias, recurrent_bias, B, T, C, H,
                 activation, recurrent_activation, go_backwards, return_sequences,
                 reset_after):
    # y_out is (B, T or 1, H); h is (B, H), initial state in, final state out;
    # xproj is (B, T, 3H); rec is (B, 3H); rec_h and rh are (B, H); x is (B, T, C);
    # kernel is (C, 3H); recurrent_kernel is (H, 3H); recurrent_kernel_h is its
    # last block (H, H), contiguous; input_bias and recurrent_bias are (3H,).
    # Gate blocks in Keras's order: z, r, h.
    np.dot(x.reshape((B * T, C)), kernel, xproj.reshape((B * T, 3 * H)))
    for s in range(T):
        t = T - 1 - s if go_backwards else s
        np.dot(h, recurrent_kernel, rec)  # rec = h_tm1 @ recurrent_kernel
        if reset_after:
            # hh = act(x_h + r * (h_tm1 @ U_h + b_rec_h))
            for b in range(B):
                for j in range(H):
                    z = apply(recurrent_activation, xproj[b, t, j] + input_bias[j]
                              + rec[b, j] + recurrent_bias[j])
                    r = apply(recurrent_activation, xproj[b, t, H + j]
                              + input_bias[H + j] + rec[b, H + j] + recurrent_bias[H + j])
                    hh = apply(activation, xproj[b, t, 2 * H + j] + input_bias[2 * H + j]
                               + r * (rec[b, 2 * H + j] + recurrent_bias[2 * H + j]))
                    h[b, j] = z * h[b, j] + (1.0 - z) * hh
        else:
            # hh = act(x_h + (r * h_tm1) @ U_h): the reset gate applies before the
            # product, so a second GEMM follows once r is known. rec's h block
            # is computed and unused; it keeps one GEMM for the z and r blocks.
            for b in range(B):
                for j in range(H):
                    r = apply(recurrent_activation, xproj[b, t, H + j]
                              + input_bias[H + j] + rec[b, H + j])
                    rh[b, j] = r * h[b, j]
            np.dot(rh, recurrent_kernel_h, rec_h)
            for b in range(B):
                for j in range(H):
                    z = apply(recurrent_activation, xproj[b, t, j] + input_bias[j] + rec[b, j])
                    hh = apply(activation, xproj[b, t, 2 * H + j] + input_bias[2 * H + j]
                               + rec_h[b, j])
                    h[b, j] = z * h[b, j] + (1.0 - z) * hh
        if return_sequences:
            for b in range(B):
                for j in range(H):
                    y_out[b, s, j] = h[b, j]
    if not return_sequences:
        for b in range(B):
            for j in range(H):
                y_out[b, 0, j] = h[b, j]
