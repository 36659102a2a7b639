"""LSTM forward, forward-train and backward kernels in Numba.

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
from ._activations import activate_block, apply, apply_grad, apply_grad_block
from ._numba_common import (masked_dout, recurrent_product, skip_row, start_backward, step_dout, step_runs,
                            take_valid_rows, write_step)


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS, error_model="numpy")
def _lstm_forward(y_out, h, c, xproj, rec, x, keep, kernel, recurrent_kernel, bias,
                  B, T, C, H, activation, recurrent_activation, go_backwards,
                  return_sequences, zero_output_for_mask):
    # y_out is (B, T or 1, H); h and c are (B, H), initial state in, final out;
    # xproj is (B, T, 4H); rec is (B, 4H); x is (B, T, C); keep is (B, T) or empty;
    # kernel is (C, 4H); recurrent_kernel is (H, 4H); bias is (4H,)
    # Gate blocks in Keras's order: i, f, c, o. Each activation runs over a whole
    # gate block (activate_block), so its loop vectorizes.
    K = 4 * H
    np.dot(x.reshape((B * T, C)), kernel, xproj.reshape((B * T, K)))
    masked = keep.shape[0] > 0
    for s in range(T):
        t = T - 1 - s if go_backwards else s
        if step_runs(keep, t, B):
            recurrent_product(rec, h, recurrent_kernel, B, H, K)  # rec = h_tm1 @ recurrent_kernel
        for b in range(B):
            if masked and not keep[b, t]:
                continue  # a masked step carries the state through
            z, xp, hb, cb = rec[b], xproj[b, t], h[b], c[b]
            for j in range(K):
                z[j] += xp[j] + bias[j]
            activate_block(z[:2 * H], recurrent_activation)  # i, f
            activate_block(z[2 * H:3 * H], activation)  # g = act(zc)
            activate_block(z[3 * H:], recurrent_activation)  # o
            for j in range(H):
                cb[j] = z[H + j] * cb[j] + z[j] * z[2 * H + j]  # c = f * c_tm1 + i * g
                hb[j] = cb[j]
            activate_block(hb, activation)
            for j in range(H):
                hb[j] *= z[3 * H + j]  # h = o * act(c)
        write_step(y_out, h, keep, s, t, B, H, T, return_sequences, zero_output_for_mask)


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS, error_model="numpy")
def _lstm_forward_train(y_out, h, c, h_tm1_seq, c_tm1_seq, preact, gates, rec, x, keep, kernel,
                        recurrent_kernel, bias, B, T, C, H, activation, recurrent_activation,
                        go_backwards, return_sequences, zero_output_for_mask):
    # y_out is (B, T or 1, H); h and c are (B, H), initial state in, final out;
    # h_tm1_seq and c_tm1_seq are (B, T, H): the states entering the step that
    # reads x[:, t]; preact and gates are (B, T, 4H): the gate pre-activations
    # and activations [i, f, act(zc), o] at x[:, t]; rec is (B, 4H) scratch;
    # x is (B, T, C); keep is (B, T) or empty (a masked row's step saves its
    # carried states and zero preact and gates, and leaves the states unchanged);
    # kernel is (C, 4H); recurrent_kernel is (H, 4H); bias is (4H,)
    # The new c is not saved: the backward recomputes it as f * c_tm1 + i * g.
    np.dot(x.reshape((B * T, C)), kernel, preact.reshape((B * T, 4 * H)))
    masked = keep.shape[0] > 0
    for s in range(T):
        t = T - 1 - s if go_backwards else s
        if step_runs(keep, t, B):
            np.dot(h, recurrent_kernel, rec)  # rec = h_tm1 @ recurrent_kernel
        for b in range(B):
            if masked and not keep[b, t]:
                skip_row(h_tm1_seq, preact, gates, h, b, t)
                for j in range(H):
                    c_tm1_seq[b, t, j] = c[b, j]
                continue
            for j in range(H):
                h_tm1_seq[b, t, j] = h[b, j]
                c_tm1_seq[b, t, j] = c[b, j]
                zi = preact[b, t, j] + bias[j] + rec[b, j]
                zf = preact[b, t, H + j] + bias[H + j] + rec[b, H + j]
                zc = preact[b, t, 2 * H + j] + bias[2 * H + j] + rec[b, 2 * H + j]
                zo = preact[b, t, 3 * H + j] + bias[3 * H + j] + rec[b, 3 * H + j]
                i = apply(recurrent_activation, zi)
                f = apply(recurrent_activation, zf)
                g = apply(activation, zc)
                o = apply(recurrent_activation, zo)
                preact[b, t, j] = zi
                preact[b, t, H + j] = zf
                preact[b, t, 2 * H + j] = zc
                preact[b, t, 3 * H + j] = zo
                gates[b, t, j] = i
                gates[b, t, H + j] = f
                gates[b, t, 2 * H + j] = g
                gates[b, t, 3 * H + j] = o
                c_new = f * c[b, j] + i * g
                c[b, j] = c_new
                h[b, j] = o * apply(activation, c_new)
        write_step(y_out, h, keep, s, t, B, H, T, return_sequences, zero_output_for_mask)


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS, error_model="numpy")
def _lstm_backward(dx, dh0, dc0, dkernel, drecurrent_kernel, dbias, dgates, dgates_t, dh_rec,
                   dcarry, dw, dy, dh_n, dc_n, h_tm1_seq, c_tm1_seq, preact, gates, x, keep,
                   kernel, recurrent_kernel, B, T, C, H, activation, recurrent_activation,
                   go_backwards, return_sequences, zero_output_for_mask):
    # dx is (B, T, C), dh0 and dc0 (B, H): written; dh0 and dc0 carry the running
    # dh_t and dc_t through the loop. dkernel (C, 4H), drecurrent_kernel (H, 4H),
    # dbias (4H,): accumulated with +=. Scratch: dgates (B, T, 4H), the gates'
    # derivatives, then the gradient w.r.t. preact; dgates_t (B, 4H); dh_rec
    # and dcarry (B, H), with a mask only: the recurrent product's gradient, and
    # the gradient of the output a masked step carried (masked_dout);
    # dw (max(C, H) * 4H,). dy is (B, T or 1, H); dh_n and dc_n are (B, H);
    # h_tm1_seq, c_tm1_seq (B, T, H), preact, gates (B, T, 4H) come from
    # _lstm_forward_train; x is (B, T, C); keep (B, T) or empty. A masked
    # row's step passes dh and dc to the step before unchanged.
    G = 4 * H
    # dgates starts as the gate activations' derivatives, e.g. d(i)/d(zi), for every (b, t).
    apply_grad_block(dgates, preact, gates, recurrent_activation, 0, 2 * H)
    apply_grad_block(dgates, preact, gates, activation, 2 * H, 3 * H)
    apply_grad_block(dgates, preact, gates, recurrent_activation, 3 * H, G)
    masked = keep.shape[0] > 0
    for b in range(B):
        for j in range(H):
            dc0[b, j] = dc_n[b, j]
    start_backward(dh0, dcarry, dy, dh_n, masked, B, H, return_sequences)
    for s in range(T - 1, -1, -1):
        t = T - 1 - s if go_backwards else s
        for b in range(B):
            if masked and not keep[b, t]:
                masked_dout(dcarry, dgates_t, dgates, dy, b, s, t, H, G, return_sequences,
                            zero_output_for_mask)
                continue
            for j in range(H):
                if masked:
                    dh0[b, j] += step_dout(dcarry, dy, b, s, j, return_sequences)
                elif return_sequences:
                    dh0[b, j] += dy[b, s, j]
                i = gates[b, t, j]
                f = gates[b, t, H + j]
                g = gates[b, t, 2 * H + j]
                o = gates[b, t, 3 * H + j]
                c_tm1 = c_tm1_seq[b, t, j]
                c_new = f * c_tm1 + i * g  # recomputed, as in the forward
                act_c = apply(activation, c_new)
                dh = dh0[b, j]
                # forward: h[b, j] = o * apply(activation, c_new)
                do = dh * act_c
                dc = dc0[b, j] + dh * o * apply_grad(activation, c_new, act_c)
                # forward: c_new = f * c[b, j] + i * g
                di = dc * g
                df = dc * c_tm1
                dg = dc * i
                dc0[b, j] = dc * f
                # forward: i, f, g, o = apply(..., zi), apply(..., zf), ...
                dzi = di * dgates[b, t, j]
                dzf = df * dgates[b, t, H + j]
                dzc = dg * dgates[b, t, 2 * H + j]
                dzo = do * dgates[b, t, 3 * H + j]
                dgates_t[b, j] = dzi
                dgates_t[b, H + j] = dzf
                dgates_t[b, 2 * H + j] = dzc
                dgates_t[b, 3 * H + j] = dzo
                dgates[b, t, j] = dzi
                dgates[b, t, H + j] = dzf
                dgates[b, t, 2 * H + j] = dzc
                dgates[b, t, 3 * H + j] = dzo
        if masked and not step_runs(keep, t, B):
            continue  # no row ran step t: every dh passes on unchanged, no product
        # forward: rec = h_tm1 @ recurrent_kernel, so dh_tm1 = dz @ recurrent_kernel^T
        if masked:  # a masked row's dh_t passes to the step before unchanged
            np.dot(dgates_t, recurrent_kernel.T, dh_rec)
            take_valid_rows(dh0, dh_rec, keep, t, B, H)
        else:
            np.dot(dgates_t, recurrent_kernel.T, dh0)
    # forward: z = x @ kernel + bias + rec. Weight gradients are sums over all
    # B*T rows, so each is one GEMM after the loop, not T small ones.
    dgates_2d = dgates.reshape((B * T, G))
    np.dot(dgates_2d, kernel.T, dx.reshape((B * T, C)))  # dx = dgates @ kernel^T
    dk = dw[:C * G].reshape((C, G))
    np.dot(x.reshape((B * T, C)).T, dgates_2d, dk)  # dkernel += x^T @ dgates
    for m in range(C):
        for k in range(G):
            dkernel[m, k] += dk[m, k]
    drk = dw[:H * G].reshape((H, G))
    np.dot(h_tm1_seq.reshape((B * T, H)).T, dgates_2d, drk)  # drecurrent_kernel += h_tm1^T @ dgates
    for m in range(H):
        for k in range(G):
            drecurrent_kernel[m, k] += drk[m, k]
    for n in range(B * T):
        for k in range(G):
            dbias[k] += dgates_2d[n, k]
