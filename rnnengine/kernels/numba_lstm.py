"""LSTM forward kernel in Numba. Contract: see ``rnnengine/kernels/__init__.py``."""
import numpy as np
from numba import njit

from ..config import FASTMATH_FLAGS
from ._activations import apply


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS)
def _lstm_forward(y_out, h, c, xproj, rec, x, kernel, recurrent_kernel, bias,
                  B, T, C, H, activation, recurrent_activation, go_backwards,
                  return_sequences):
    # y_out is (B, T or 1, H); h and c are (B, H), initial state in, final out;
    # xproj is (B, T, 4H); rec is (B, 4H); x is (B, T, C);
    # kernel is (C, 4H); recurrent_kernel is (H, 4H); bias is (4H,)
    # Gate blocks in Keras's order: i, f, c, o.
    np.dot(x.reshape((B * T, C)), kernel, xproj.reshape((B * T, 4 * H)))
    for s in range(T):
        t = T - 1 - s if go_backwards else s
        np.dot(h, recurrent_kernel, rec)  # rec = h_tm1 @ recurrent_kernel
        for b in range(B):
            for j in range(H):
                zi = xproj[b, t, j] + bias[j] + rec[b, j]
                zf = xproj[b, t, H + j] + bias[H + j] + rec[b, H + j]
                zc = xproj[b, t, 2 * H + j] + bias[2 * H + j] + rec[b, 2 * H + j]
                zo = xproj[b, t, 3 * H + j] + bias[3 * H + j] + rec[b, 3 * H + j]
                i = apply(recurrent_activation, zi)
                f = apply(recurrent_activation, zf)
                o = apply(recurrent_activation, zo)
                c_new = f * c[b, j] + i * apply(activation, zc)
                c[b, j] = c_new
                h[b, j] = o * apply(activation, c_new)
        if return_sequences:
            for b in range(B):
                for j in range(H):
                    y_out[b, s, j] = h[b, j]
    if not return_sequences:
        for b in range(B):
            for j in range(H):
                y_out[b, 0, j] = h[b, j]
