"""GRU forward, forward-train and backward kernels in Numba (both reset_after variants).

Contract: see ``rnnengine/kernels/__init__.py``.

Numba's disk cache keys each kernel on this file only, not on the functions it
calls: a change to ``_activations.py`` (e.g. ``activate_block``'s float32
sigmoid) reaches an existing cache only through an edit here, or after deleting
``rnnengine/kernels/__pycache__/*.nbi`` and ``*.nbc``.
"""
import numpy as np
from numba import njit, types
from numba.extending import overload

from . import _numba_cache  # noqa: F401  (an installed package caches outside itself)
from ..config import FASTMATH_FLAGS, FASTMATH_FLAGS_KERAS_ORDER
from ._activations import activate_block, apply, apply_grad_block
from ._numba_common import (masked_dout, recurrent_product, skip_row, start_backward, step_dout, step_runs,
                            write_step)


def _one_like(v):
    """1 in ``v``'s float type (a plain 1.0 would promote float32 to float64)."""
    return type(v)(1)


@overload(_one_like)
def _one_like_overload(v):
    if v == types.float32:
        return lambda v: np.float32(1.0)
    return lambda v: 1.0


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS_KERAS_ORDER, error_model="numpy")
def _gru_update(z, h_tm1, hh):
    """Keras 3's GRUCell state update, h = z * h_tm1 + (1 - z) * hh, in z's type.

    Compiled without "reassoc" and "contract" (config.FASTMATH_FLAGS_KERAS_ORDER)
    and not inlined by Numba, so that LLVM inlines it with those flags and
    evaluates it in Keras's order, in the kernels' dtype: with "reassoc" LLVM
    computed hh + z * (h_tm1 - hh), which gives 0 instead of h_tm1 when z = 1 and
    |hh| > 1e16 |h_tm1|, and +-inf instead of NaN on an inf input.
    """
    return z * h_tm1 + (_one_like(z) - z) * hh


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS, error_model="numpy")
def _gru_forward(y_out, h, xproj, rec, rec_h, rh, x, keep, kernel, recurrent_kernel,
                 recurrent_kernel_h, input_bias, recurrent_bias, B, T, C, H,
                 activation, recurrent_activation, go_backwards, return_sequences,
                 reset_after, zero_output_for_mask):
    # y_out is (B, T or 1, H); h is (B, H), initial state in, final state out;
    # xproj is (B, T, 3H); rec is (B, 3H); rec_h and rh are (B, H); x is (B, T, C);
    # keep is (B, T) or empty (a masked row's step is skipped: its state carries);
    # kernel is (C, 3H); recurrent_kernel is (H, 3H); recurrent_kernel_h is its
    # last block (H, H), contiguous; input_bias and recurrent_bias are (3H,).
    # Gate blocks in Keras's order: z, r, h.
    K = 3 * H
    np.dot(x.reshape((B * T, C)), kernel, xproj.reshape((B * T, K)))
    masked = keep.shape[0] > 0
    for s in range(T):
        t = T - 1 - s if go_backwards else s
        if not step_runs(keep, t, B):
            pass
        elif reset_after:
            recurrent_product(rec, h, recurrent_kernel, B, H, K)  # rec = h_tm1 @ recurrent_kernel
            for b in range(B):
                if masked and not keep[b, t]:
                    continue
                z, xp, hb = rec[b], xproj[b, t], h[b]
                for j in range(2 * H):
                    z[j] += xp[j] + input_bias[j] + recurrent_bias[j]
                activate_block(z[:2 * H], recurrent_activation)  # z, r
                # hh = act(x_h + r * (h_tm1 @ U_h + b_rec_h))
                for j in range(2 * H, K):
                    z[j] = xp[j] + input_bias[j] + z[j - H] * (z[j] + recurrent_bias[j])
                activate_block(z[2 * H:], activation)
                for j in range(H):
                    hb[j] = _gru_update(z[j], hb[j], z[2 * H + j])
        else:
            # hh = act(x_h + (r * h_tm1) @ U_h): the reset gate applies before the
            # product, so a second product follows once r is known. The first
            # product's h block is computed and unused: one product for z and r.
            recurrent_product(rec, h, recurrent_kernel, B, H, K)
            for b in range(B):
                z, xp = rec[b], xproj[b, t]
                for j in range(2 * H):
                    z[j] += xp[j] + input_bias[j]
                activate_block(z[:2 * H], recurrent_activation)  # z, r
                for j in range(H):
                    rh[b, j] = z[H + j] * h[b, j]
            recurrent_product(rec_h, rh, recurrent_kernel_h, B, H, H)
            for b in range(B):
                if masked and not keep[b, t]:
                    continue
                z, xp, hh, hb = rec[b], xproj[b, t], rec_h[b], h[b]
                for j in range(H):
                    hh[j] += xp[2 * H + j] + input_bias[2 * H + j]
                activate_block(hh, activation)
                for j in range(H):
                    hb[j] = _gru_update(z[j], hb[j], hh[j])
        write_step(y_out, h, keep, s, t, B, H, T, return_sequences, zero_output_for_mask)


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS, error_model="numpy")
def _gru_forward_train(y_out, h, h_tm1_seq, preact, gates, hh_rec_seq, rec, rec_h, rh, x, keep,
                       kernel, recurrent_kernel, recurrent_kernel_h, input_bias,
                       recurrent_bias, B, T, C, H, activation, recurrent_activation,
                       go_backwards, return_sequences, reset_after, zero_output_for_mask):
    # y_out is (B, T or 1, H); h is (B, H), initial state in, final state out;
    # h_tm1_seq is (B, T, H): the state entering the step that reads x[:, t];
    # preact and gates are (B, T, 3H): the pre-activations [a_z, a_r, a_h] and
    # activations [z, r, hh] at x[:, t]; hh_rec_seq is (B, T, H): the candidate's
    # recurrent term, h_tm1 @ U_h + recurrent_bias_h before r scales it
    # (reset_after), or rh = r * h_tm1 before U_h multiplies it (otherwise);
    # rec (B, 3H), rec_h and rh (B, H) are scratch; x is (B, T, C); keep is
    # (B, T) or empty (a masked row's step saves its carried state and zero
    # preact, gates and hh_rec_seq, and leaves the state unchanged);
    # kernel is (C, 3H); recurrent_kernel is (H, 3H); recurrent_kernel_h is its
    # last block (H, H), contiguous; input_bias and recurrent_bias are (3H,).
    np.dot(x.reshape((B * T, C)), kernel, preact.reshape((B * T, 3 * H)))
    masked = keep.shape[0] > 0
    for s in range(T):
        t = T - 1 - s if go_backwards else s
        if not step_runs(keep, t, B):
            for b in range(B):
                _gru_skip_row(h_tm1_seq, preact, gates, hh_rec_seq, rh, h, b, t, H)
        elif reset_after:
            np.dot(h, recurrent_kernel, rec)  # rec = h_tm1 @ recurrent_kernel
            for b in range(B):
                if masked and not keep[b, t]:
                    _gru_skip_row(h_tm1_seq, preact, gates, hh_rec_seq, rh, h, b, t, H)
                    continue
                for j in range(H):
                    h_tm1 = h[b, j]
                    h_tm1_seq[b, t, j] = h_tm1
                    a_z = preact[b, t, j] + input_bias[j] + rec[b, j] + recurrent_bias[j]
                    a_r = (preact[b, t, H + j] + input_bias[H + j] + rec[b, H + j]
                           + recurrent_bias[H + j])
                    z = apply(recurrent_activation, a_z)
                    r = apply(recurrent_activation, a_r)
                    hh_rec = rec[b, 2 * H + j] + recurrent_bias[2 * H + j]
                    a_h = preact[b, t, 2 * H + j] + input_bias[2 * H + j] + r * hh_rec
                    hh = apply(activation, a_h)
                    preact[b, t, j] = a_z
                    preact[b, t, H + j] = a_r
                    preact[b, t, 2 * H + j] = a_h
                    gates[b, t, j] = z
                    gates[b, t, H + j] = r
                    gates[b, t, 2 * H + j] = hh
                    hh_rec_seq[b, t, j] = hh_rec
                    h[b, j] = _gru_update(z, h_tm1, hh)
        else:
            # The reset gate applies before the product: a second GEMM follows
            # once r is known, as in _gru_forward.
            np.dot(h, recurrent_kernel, rec)  # rec = h_tm1 @ recurrent_kernel
            for b in range(B):
                if masked and not keep[b, t]:
                    _gru_skip_row(h_tm1_seq, preact, gates, hh_rec_seq, rh, h, b, t, H)
                    continue
                for j in range(H):
                    h_tm1_seq[b, t, j] = h[b, j]
                    a_r = preact[b, t, H + j] + input_bias[H + j] + rec[b, H + j]
                    r = apply(recurrent_activation, a_r)
                    preact[b, t, H + j] = a_r
                    gates[b, t, H + j] = r
                    rh[b, j] = r * h[b, j]
                    hh_rec_seq[b, t, j] = rh[b, j]
            np.dot(rh, recurrent_kernel_h, rec_h)
            for b in range(B):
                if masked and not keep[b, t]:
                    continue
                for j in range(H):
                    a_z = preact[b, t, j] + input_bias[j] + rec[b, j]
                    a_h = preact[b, t, 2 * H + j] + input_bias[2 * H + j] + rec_h[b, j]
                    z = apply(recurrent_activation, a_z)
                    hh = apply(activation, a_h)
                    preact[b, t, j] = a_z
                    preact[b, t, 2 * H + j] = a_h
                    gates[b, t, j] = z
                    gates[b, t, 2 * H + j] = hh
                    h[b, j] = _gru_update(z, h[b, j], hh)
        write_step(y_out, h, keep, s, t, B, H, T, return_sequences, zero_output_for_mask)


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS, error_model="numpy")
def _gru_skip_row(h_tm1_seq, preact, gates, hh_rec_seq, rh, h, b, t, H):
    # forward_train, a masked row's step (skip_row), and its rh row zeroed (the
    # product rh @ U_h of reset_after=False reads it; the result is unused).
    skip_row(h_tm1_seq, preact, gates, h, b, t)
    for j in range(H):
        hh_rec_seq[b, t, j] = 0.0
        rh[b, j] = 0.0


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS, error_model="numpy")
def _gru_backward(dx, dh0, dkernel, drecurrent_kernel, dinput_bias, drecurrent_bias,
                  dgates, dhh_rec_seq, dgates_t, dh_rec, dhh_t, dcarry, dw, dy, dh_n, h_tm1_seq,
                  preact, gates, hh_rec_seq, x, keep, kernel, recurrent_kernel, recurrent_kernel_h,
                  B, T, C, H, activation, recurrent_activation, go_backwards,
                  return_sequences, reset_after, zero_output_for_mask):
    # dx is (B, T, C) and dh0 (B, H): written; dh0 carries the running dh_t
    # through the loop. dkernel (C, 3H), drecurrent_kernel (H, 3H), dinput_bias
    # and drecurrent_bias (3H,): accumulated with += (drecurrent_bias untouched
    # unless reset_after). Scratch: dgates (B, T, 3H), the activations'
    # derivatives, then the gradient w.r.t. preact; dhh_rec_seq (B, T, H), the gradient w.r.t. the candidate's
    # recurrent product (h_tm1 @ U_h + recurrent_bias_h with reset_after, rh @ U_h
    # without); dgates_t (B, 3H); dh_rec and dhh_t (B, H); dcarry (B, H), with
    # a mask only: the gradient of the output a masked step carried
    # (masked_dout); dw (max(C, H) * 3H,).
    # dy is (B, T or 1, H); dh_n is (B, H); h_tm1_seq, hh_rec_seq (B, T, H),
    # preact, gates (B, T, 3H) come from _gru_forward_train; x is (B, T, C);
    # keep (B, T) or empty: a masked row's step passes dh to the step before
    # unchanged.
    G = 3 * H
    # dgates starts as the activations' derivatives, e.g. d(z)/d(a_z), for every (b, t).
    apply_grad_block(dgates, preact, gates, recurrent_activation, 0, 2 * H)
    apply_grad_block(dgates, preact, gates, activation, 2 * H, G)
    masked = keep.shape[0] > 0
    start_backward(dh0, dcarry, dy, dh_n, masked, B, H, return_sequences)
    for s in range(T - 1, -1, -1):
        t = T - 1 - s if go_backwards else s
        for b in range(B):
            if masked and not keep[b, t]:
                masked_dout(dcarry, dgates_t, dgates, dy, b, s, t, H, G, return_sequences,
                            zero_output_for_mask)
                for j in range(H):
                    dhh_rec_seq[b, t, j] = 0.0
                    dhh_t[b, j] = 0.0
                continue
            for j in range(H):
                if masked:
                    dh0[b, j] += step_dout(dcarry, dy, b, s, j, return_sequences)
                elif return_sequences:
                    dh0[b, j] += dy[b, s, j]
                dh = dh0[b, j]
                z = gates[b, t, j]
                hh = gates[b, t, 2 * H + j]
                h_tm1 = h_tm1_seq[b, t, j]
                # forward: h[b, j] = z * h_tm1 + (1.0 - z) * hh
                dz = dh * (h_tm1 - hh)
                dhh = dh * (1.0 - z)
                dh0[b, j] = dh * z
                # forward: hh = apply(activation, a_h); z = apply(recurrent_activation, a_z)
                da_h = dhh * dgates[b, t, 2 * H + j]
                da_z = dz * dgates[b, t, j]
                dgates[b, t, j] = da_z
                dgates[b, t, 2 * H + j] = da_h
                dgates_t[b, j] = da_z
                if reset_after:
                    # forward: a_h = x_h + input_bias_h + r * hh_rec
                    r = gates[b, t, H + j]
                    dr = da_h * hh_rec_seq[b, t, j]
                    dhh_rec = da_h * r
                    # forward: r = apply(recurrent_activation, a_r)
                    da_r = dr * dgates[b, t, H + j]
                    dgates[b, t, H + j] = da_r
                    dgates_t[b, H + j] = da_r
                    dgates_t[b, 2 * H + j] = dhh_rec
                    dhh_rec_seq[b, t, j] = dhh_rec
                else:
                    # forward: a_h = x_h + input_bias_h + rh @ U_h; da_r needs
                    # d(rh), which needs this step's whole da_h: a GEMM first.
                    dhh_t[b, j] = da_h
                    dhh_rec_seq[b, t, j] = da_h
                    dgates_t[b, 2 * H + j] = 0.0  # rec's h block was unused
        if masked and not step_runs(keep, t, B):
            continue  # no row ran step t: every dh passes on unchanged, no product
        if not reset_after:
            np.dot(dhh_t, recurrent_kernel_h.T, dh_rec)  # d(rh) = da_h @ U_h^T
            for b in range(B):
                if masked and not keep[b, t]:
                    continue
                for j in range(H):
                    # forward: rh[b, j] = r * h[b, j], r = apply(recurrent_activation, a_r)
                    r = gates[b, t, H + j]
                    dr = dh_rec[b, j] * h_tm1_seq[b, t, j]
                    dh0[b, j] += dh_rec[b, j] * r
                    da_r = dr * dgates[b, t, H + j]
                    dgates[b, t, H + j] = da_r
                    dgates_t[b, H + j] = da_r
        # forward: rec = h_tm1 @ recurrent_kernel, so dh_tm1 += drec @ recurrent_kernel^T
        np.dot(dgates_t, recurrent_kernel.T, dh_rec)
        for b in range(B):
            if masked and not keep[b, t]:
                continue  # a masked row's dh_t passes to the step before unchanged
            for j in range(H):
                dh0[b, j] += dh_rec[b, j]
    # forward: preact = x @ kernel + input_bias + [recurrent terms]. Weight
    # gradients are sums over all B*T rows: a few GEMMs after the loop.
    dgates_2d = dgates.reshape((B * T, G))
    np.dot(dgates_2d, kernel.T, dx.reshape((B * T, C)))  # dx = dgates @ kernel^T
    dk = dw[:C * G].reshape((C, G))
    np.dot(x.reshape((B * T, C)).T, dgates_2d, dk)  # dkernel += x^T @ dgates
    for m in range(C):
        for k in range(G):
            dkernel[m, k] += dk[m, k]
    for n in range(B * T):
        for k in range(G):
            dinput_bias[k] += dgates_2d[n, k]
    # The z and r blocks of drecurrent_kernel pair h_tm1 with dgates; the h block
    # pairs the candidate's recurrent operand with dhh_rec_seq (the product
    # also fills the h-block columns of drk, unused: dgates' h block is da_h).
    h_tm1_2d = h_tm1_seq.reshape((B * T, H))
    drk = dw[:H * G].reshape((H, G))
    np.dot(h_tm1_2d.T, dgates_2d, drk)
    for m in range(H):
        for k in range(2 * H):
            drecurrent_kernel[m, k] += drk[m, k]
    drk_h = dw[:H * H].reshape((H, H))
    dhh_rec_2d = dhh_rec_seq.reshape((B * T, H))
    if reset_after:
        np.dot(h_tm1_2d.T, dhh_rec_2d, drk_h)  # h_tm1^T @ d(h_tm1 @ U_h)
    else:
        np.dot(hh_rec_seq.reshape((B * T, H)).T, dhh_rec_2d, drk_h)  # rh^T @ d(rh @ U_h)
    for m in range(H):
        for k in range(H):
            drecurrent_kernel[m, 2 * H + k] += drk_h[m, k]
    if reset_after:
        for n in range(B * T):
            for k in range(2 * H):
                drecurrent_bias[k] += dgates_2d[n, k]
            for k in range(H):
                drecurrent_bias[2 * H + k] += dhh_rec_2d[n, k]
