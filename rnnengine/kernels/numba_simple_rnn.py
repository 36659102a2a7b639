"""SimpleRNN forward, forward-train and backward kernels in Numba.

Contract: see ``rnnengine/kernels/__init__.py``.

Numba's disk cache keys each kernel on this file only, not on the functions it
calls: a change to ``_activations.py`` (e.g. ``activate_block``'s float32
sigmoid) reaches an existing cache only through an edit here, or after deleting
``rnnengine/kernels/__pycache__/*.nbi`` and ``*.nbc``.
"""
import numpy as np
from numba import njit

from . import _numba_cache  # noqa: F401  (an installed package caches outside itself)
from ..config import FASTMATH_FLAGS
from ._activations import activate_block, apply, apply_grad_block
from ._numba_common import (masked_dout, recurrent_product, skip_row, start_backward, step_dout, step_runs,
                            take_valid_rows, write_step)


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS, error_model="numpy")
def _simple_rnn_forward(y_out, h, xproj, rec, x, keep, kernel, recurrent_kernel, bias,
                        B, T, C, H, activation, go_backwards, return_sequences,
                        zero_output_for_mask):
    # y_out is (B, T or 1, H); h is (B, H), initial state in, final state out;
    # xproj is (B, T, H); rec is (B, H); x is (B, T, C); keep is (B, T) or empty;
    # kernel is (C, H); recurrent_kernel is (H, H); bias is (H,)
    # One GEMM projects every timestep: xproj = x @ kernel.
    np.dot(x.reshape((B * T, C)), kernel, xproj.reshape((B * T, H)))
    masked = keep.shape[0] > 0
    for s in range(T):
        t = T - 1 - s if go_backwards else s
        if step_runs(keep, t, B):
            recurrent_product(rec, h, recurrent_kernel, B, H, H)  # rec = h_tm1 @ recurrent_kernel
        for b in range(B):
            if masked and not keep[b, t]:
                continue  # a masked step carries the state through
            z, xp, hb = rec[b], xproj[b, t], h[b]
            for j in range(H):
                z[j] += xp[j] + bias[j]
            activate_block(z, activation)
            hb[:] = z
        write_step(y_out, h, keep, s, t, B, H, T, return_sequences, zero_output_for_mask)


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS, error_model="numpy")
def _simple_rnn_forward_train(y_out, h, h_tm1_seq, preact, gates, rec, x, keep, kernel,
                              recurrent_kernel, bias, B, T, C, H, activation, go_backwards,
                              return_sequences, zero_output_for_mask):
    # y_out is (B, T or 1, H); h is (B, H), initial state in, final state out;
    # h_tm1_seq is (B, T, H): the state entering the step that reads x[:, t];
    # preact and gates are (B, T, H): the activation's input and output at x[:, t];
    # rec is (B, H) scratch; x is (B, T, C); keep is (B, T) or empty (a masked
    # row's step saves its carried state and zero preact and gates, and leaves
    # the state unchanged); kernel is (C, H); recurrent_kernel is (H, H); bias is (H,)
    # preact starts as x @ kernel (one GEMM) and each step adds bias + rec in place.
    np.dot(x.reshape((B * T, C)), kernel, preact.reshape((B * T, H)))
    masked = keep.shape[0] > 0
    for s in range(T):
        t = T - 1 - s if go_backwards else s
        if step_runs(keep, t, B):
            np.dot(h, recurrent_kernel, rec)  # rec = h_tm1 @ recurrent_kernel
        for b in range(B):
            if masked and not keep[b, t]:
                skip_row(h_tm1_seq, preact, gates, h, b, t)
                continue
            for j in range(H):
                h_tm1_seq[b, t, j] = h[b, j]
                v = preact[b, t, j] + bias[j] + rec[b, j]
                preact[b, t, j] = v
                h_bt = apply(activation, v)
                gates[b, t, j] = h_bt
                h[b, j] = h_bt
        write_step(y_out, h, keep, s, t, B, H, T, return_sequences, zero_output_for_mask)


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS, error_model="numpy")
def _simple_rnn_backward(dx, dh0, dkernel, drecurrent_kernel, dbias, dgates, dgates_t, dh_rec,
                         dcarry, dw, dy, dh_n, h_tm1_seq, preact, gates, x, keep, kernel,
                         recurrent_kernel, B, T, C, H, activation, go_backwards, return_sequences,
                         zero_output_for_mask):
    # dx is (B, T, C) and dh0 (B, H): written; dh0 carries the running dh_t
    # through the loop. dkernel (C, H), drecurrent_kernel (H, H), dbias (H,):
    # accumulated with +=. Scratch: dgates (B, T, H), the activation's derivative,
    # then the gradient w.r.t. preact; dgates_t (B, H); dh_rec and dcarry (B, H),
    # with a mask only: the recurrent product's gradient, and the gradient of
    # the output a masked step carried (masked_dout); dw (max(C, H) * H,).
    # dy is (B, T or 1, H); dh_n is (B, H); h_tm1_seq, preact, gates are
    # (B, T, H) from _simple_rnn_forward_train; x is (B, T, C); keep (B, T) or empty.
    # dgates starts as the activation's derivative, d(h_bt)/dv, for every (b, t).
    apply_grad_block(dgates, preact, gates, activation, 0, H)
    masked = keep.shape[0] > 0
    start_backward(dh0, dcarry, dy, dh_n, masked, B, H, return_sequences)
    for s in range(T - 1, -1, -1):
        t = T - 1 - s if go_backwards else s
        for b in range(B):
            if masked and not keep[b, t]:
                masked_dout(dcarry, dgates_t, dgates, dy, b, s, t, H, H, return_sequences,
                            zero_output_for_mask)
                continue
            for j in range(H):
                if masked:
                    dh0[b, j] += step_dout(dcarry, dy, b, s, j, return_sequences)
                elif return_sequences:
                    dh0[b, j] += dy[b, s, j]
                # forward: h_bt = apply(activation, v)
                dv = dh0[b, j] * dgates[b, t, j]
                dgates_t[b, j] = dv
                dgates[b, t, j] = dv
        if masked and not step_runs(keep, t, B):
            continue  # no row ran step t: every dh passes on unchanged, no product
        # forward: rec = h_tm1 @ recurrent_kernel, so dh_tm1 = dv @ recurrent_kernel^T
        if masked:  # a masked row's dh_t passes to the step before unchanged
            np.dot(dgates_t, recurrent_kernel.T, dh_rec)
            take_valid_rows(dh0, dh_rec, keep, t, B, H)
        else:
            np.dot(dgates_t, recurrent_kernel.T, dh0)
    # forward: preact = x @ kernel + bias + rec. Weight gradients are sums over all
    # B*T rows, so each is one GEMM after the loop, not T small ones.
    dgates_2d = dgates.reshape((B * T, H))
    np.dot(dgates_2d, kernel.T, dx.reshape((B * T, C)))  # dx = dgates @ kernel^T
    dk = dw[:C * H].reshape((C, H))
    np.dot(x.reshape((B * T, C)).T, dgates_2d, dk)  # dkernel += x^T @ dgates
    for m in range(C):
        for k in range(H):
            dkernel[m, k] += dk[m, k]
    drk = dw[:H * H].reshape((H, H))
    np.dot(h_tm1_seq.reshape((B * T, H)).T, dgates_2d, drk)  # drecurrent_kernel += h_tm1^T @ dgates
    for m in range(H):
        for k in range(H):
            drecurrent_kernel[m, k] += drk[m, k]
    for n in range(B * T):
        for k in range(H):
            dbias[k] += dgates_2d[n, k]
