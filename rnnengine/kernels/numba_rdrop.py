"""Training kernels with Keras 3's recurrent dropout, in Numba (SimpleRNN, LSTM, GRU).

Contract: the ``*_forward_train_rdrop`` / ``*_backward_rdrop`` section of
``rnnengine/kernels/__init__.py``. They compute what ``*_forward_train`` /
``*_backward`` compute, with Keras 3's masks (``keras/src/layers/rnn/*.py``,
``implementation=1``, which ``recurrent_dropout > 0`` forces for LSTM and GRU):
gate g (K gates: SimpleRNN 1, LSTM i f c o, GRU z r h) reads the input as
``x * dp[g]`` and the previous state as ``h_tm1 * rdp[g]``, each mask (B, C) or
(B, H) fixed over the whole sequence. The state itself (GRU's ``z * h_tm1``)
is not masked. The kernels take per-gate contiguous weight blocks:
``kernel_g[g] = kernel[:, g*H:(g+1)*H]`` (K, C, H) and ``recurrent_kernel_g``
(K, H, H) likewise.
"""
import numpy as np
from numba import njit

from . import _numba_cache  # noqa: F401  (an installed package caches outside itself)
from ..config import FASTMATH_FLAGS
from ._activations import apply, apply_grad, apply_grad_block

_JIT = dict(cache=True, nogil=True, fastmath=FASTMATH_FLAGS, error_model="numpy")


# -- shared pieces --------------------------------------------------------------------------

@njit(**_JIT)
def _masked_projection(preact, x, dp, kernel_g, xm, pm, B, T, C, H, K):
    # preact[:, :, g*H:(g+1)*H] = (x * dp[g]) @ kernel_g[g], for each gate g;
    # xm (B*T, C) and pm (B*T, H) are scratch.
    for g in range(K):
        for b in range(B):
            for t in range(T):
                for m in range(C):
                    xm[b * T + t, m] = x[b, t, m] * dp[g, b, m]
        np.dot(xm, kernel_g[g], pm)
        for b in range(B):
            for t in range(T):
                for j in range(H):
                    preact[b, t, g * H + j] = pm[b * T + t, j]


@njit(**_JIT)
def _masked_recurrent(rec, h, rdp, recurrent_kernel_g, hm, recg, B, H, g0, g1):
    # rec[:, g*H:(g+1)*H] = (h * rdp[g]) @ recurrent_kernel_g[g] for g in [g0, g1);
    # hm and recg (B, H) are scratch.
    for g in range(g0, g1):
        for b in range(B):
            for j in range(H):
                hm[b, j] = h[b, j] * rdp[g, b, j]
        np.dot(hm, recurrent_kernel_g[g], recg)
        for b in range(B):
            for j in range(H):
                rec[b, g * H + j] = recg[b, j]


@njit(**_JIT)
def _masked_recurrent_grad(dh, dgates_t, rdp, recurrent_kernel_g, dgm, hm, B, H, g0, g1):
    # forward: rec_g = (h_tm1 * rdp[g]) @ U_g, so dh_tm1 += (drec_g @ U_g^T) * rdp[g]
    for g in range(g0, g1):
        for b in range(B):
            for j in range(H):
                dgm[b, j] = dgates_t[b, g * H + j]
        np.dot(dgm, recurrent_kernel_g[g].T, hm)
        for b in range(B):
            for j in range(H):
                dh[b, j] += hm[b, j] * rdp[g, b, j]


@njit(**_JIT)
def _masked_input_grads(dx, dkernel, dgates, x, dp, kernel_g, xm, pm, dw, B, T, C, H, K, G):
    # forward: preact_g = (x * dp[g]) @ kernel_g[g], so
    # dx = sum_g (dgates_g @ kernel_g[g]^T) * dp[g], dkernel[:, g] += (x * dp[g])^T @ dgates_g
    dwc = dw[:C * H].reshape((C, H))
    for b in range(B):
        for t in range(T):
            for m in range(C):
                dx[b, t, m] = 0.0
    for g in range(K):
        for b in range(B):
            for t in range(T):
                for j in range(H):
                    pm[b * T + t, j] = dgates[b, t, g * H + j]
        np.dot(pm, kernel_g[g].T, xm)
        for b in range(B):
            for t in range(T):
                for m in range(C):
                    dx[b, t, m] += xm[b * T + t, m] * dp[g, b, m]
                    xm[b * T + t, m] = x[b, t, m] * dp[g, b, m]
        np.dot(xm.T, pm, dwc)
        for m in range(C):
            for j in range(H):
                dkernel[m, g * H + j] += dwc[m, j]


@njit(**_JIT)
def _masked_recurrent_weight_grad(drecurrent_kernel, g, src, src_col0, h_tm1_seq, rdp, hseq, pm, dw, B, T, H):
    # forward: rec_g = (h_tm1 * rdp[g]) @ U_g, so
    # drecurrent_kernel[:, g*H:(g+1)*H] += (h_tm1 * rdp[g])^T @ src[..., src_col0:src_col0+H]
    dwh = dw[:H * H].reshape((H, H))
    for b in range(B):
        for t in range(T):
            for j in range(H):
                hseq[b * T + t, j] = h_tm1_seq[b, t, j] * rdp[g, b, j]
                pm[b * T + t, j] = src[b, t, src_col0 + j]
    np.dot(hseq.T, pm, dwh)
    for m in range(H):
        for j in range(H):
            drecurrent_kernel[m, g * H + j] += dwh[m, j]


@njit(**_JIT)
def _write_output(y_out, h, s, B, H, return_sequences, last):
    if return_sequences or last:
        i = s if return_sequences else 0
        for b in range(B):
            for j in range(H):
                y_out[b, i, j] = h[b, j]


# -- SimpleRNN ------------------------------------------------------------------------------

@njit(**_JIT)
def _simple_rnn_forward_train_rdrop(y_out, h, h_tm1_seq, preact, gates, rec, x, kernel_g, recurrent_kernel_g,
                                    bias, dp, rdp, xm, pm, hm, recg, B, T, C, H, activation, go_backwards,
                                    return_sequences):
    # _simple_rnn_forward_train with h = act((x * dp) @ W + b + (h_tm1 * rdp) @ U)
    _masked_projection(preact, x, dp, kernel_g, xm, pm, B, T, C, H, 1)
    for s in range(T):
        t = T - 1 - s if go_backwards else s
        _masked_recurrent(rec, h, rdp, recurrent_kernel_g, hm, recg, B, H, 0, 1)
        for b in range(B):
            for j in range(H):
                h_tm1_seq[b, t, j] = h[b, j]
                v = preact[b, t, j] + bias[j] + rec[b, j]
                preact[b, t, j] = v
                h_bt = apply(activation, v)
                gates[b, t, j] = h_bt
                h[b, j] = h_bt
        _write_output(y_out, h, s, B, H, return_sequences, s == T - 1)


@njit(**_JIT)
def _simple_rnn_backward_rdrop(dx, dh0, dkernel, drecurrent_kernel, dbias, dgates, dgates_t, dw, dy, dh_n,
                               h_tm1_seq, preact, gates, x, kernel_g, recurrent_kernel_g, dp, rdp, xm, pm,
                               hm, recg, hseq, B, T, C, H, activation, go_backwards, return_sequences):
    apply_grad_block(dgates, preact, gates, activation, 0, H)
    for b in range(B):
        for j in range(H):
            dh0[b, j] = dh_n[b, j]
            if not return_sequences:
                dh0[b, j] += dy[b, 0, j]
    for s in range(T - 1, -1, -1):
        t = T - 1 - s if go_backwards else s
        for b in range(B):
            for j in range(H):
                if return_sequences:
                    dh0[b, j] += dy[b, s, j]
                dv = dh0[b, j] * dgates[b, t, j]  # forward: h_bt = apply(activation, v)
                dgates_t[b, j] = dv
                dgates[b, t, j] = dv
                dh0[b, j] = 0.0
        _masked_recurrent_grad(dh0, dgates_t, rdp, recurrent_kernel_g, recg, hm, B, H, 0, 1)
    _masked_input_grads(dx, dkernel, dgates, x, dp, kernel_g, xm, pm, dw, B, T, C, H, 1, H)
    _masked_recurrent_weight_grad(drecurrent_kernel, 0, dgates, 0, h_tm1_seq, rdp, hseq, pm, dw, B, T, H)
    for b in range(B):
        for t in range(T):
            for k in range(H):
                dbias[k] += dgates[b, t, k]


# -- LSTM -----------------------------------------------------------------------------------

@njit(**_JIT)
def _lstm_forward_train_rdrop(y_out, h, c, h_tm1_seq, c_tm1_seq, preact, gates, rec, x, kernel_g,
                              recurrent_kernel_g, bias, dp, rdp, xm, pm, hm, recg, B, T, C, H, activation,
                              recurrent_activation, go_backwards, return_sequences):
    # _lstm_forward_train with gate g's pre-activation (x * dp[g]) @ W_g + b_g + (h_tm1 * rdp[g]) @ U_g
    _masked_projection(preact, x, dp, kernel_g, xm, pm, B, T, C, H, 4)
    for s in range(T):
        t = T - 1 - s if go_backwards else s
        _masked_recurrent(rec, h, rdp, recurrent_kernel_g, hm, recg, B, H, 0, 4)
        for b in range(B):
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
        _write_output(y_out, h, s, B, H, return_sequences, s == T - 1)


@njit(**_JIT)
def _lstm_backward_rdrop(dx, dh0, dc0, dkernel, drecurrent_kernel, dbias, dgates, dgates_t, dw, dy, dh_n, dc_n,
                         h_tm1_seq, c_tm1_seq, preact, gates, x, kernel_g, recurrent_kernel_g, dp, rdp, xm, pm,
                         hm, recg, hseq, B, T, C, H, activation, recurrent_activation, go_backwards,
                         return_sequences):
    G = 4 * H
    apply_grad_block(dgates, preact, gates, recurrent_activation, 0, 2 * H)
    apply_grad_block(dgates, preact, gates, activation, 2 * H, 3 * H)
    apply_grad_block(dgates, preact, gates, recurrent_activation, 3 * H, G)
    for b in range(B):
        for j in range(H):
            dh0[b, j] = dh_n[b, j]
            dc0[b, j] = dc_n[b, j]
            if not return_sequences:
                dh0[b, j] += dy[b, 0, j]
    for s in range(T - 1, -1, -1):
        t = T - 1 - s if go_backwards else s
        for b in range(B):
            for j in range(H):
                if return_sequences:
                    dh0[b, j] += dy[b, s, j]
                i = gates[b, t, j]
                f = gates[b, t, H + j]
                g = gates[b, t, 2 * H + j]
                o = gates[b, t, 3 * H + j]
                c_tm1 = c_tm1_seq[b, t, j]
                c_new = f * c_tm1 + i * g
                act_c = apply(activation, c_new)
                dh = dh0[b, j]
                do = dh * act_c  # forward: h = o * act(c_new)
                dc = dc0[b, j] + dh * o * apply_grad(activation, c_new, act_c)
                dc0[b, j] = dc * f  # forward: c_new = f * c_tm1 + i * g
                dzi = dc * g * dgates[b, t, j]
                dzf = dc * c_tm1 * dgates[b, t, H + j]
                dzc = dc * i * dgates[b, t, 2 * H + j]
                dzo = do * dgates[b, t, 3 * H + j]
                dgates_t[b, j] = dzi
                dgates_t[b, H + j] = dzf
                dgates_t[b, 2 * H + j] = dzc
                dgates_t[b, 3 * H + j] = dzo
                dgates[b, t, j] = dzi
                dgates[b, t, H + j] = dzf
                dgates[b, t, 2 * H + j] = dzc
                dgates[b, t, 3 * H + j] = dzo
                dh0[b, j] = 0.0  # h_tm1 reaches this step only through the recurrent products
        _masked_recurrent_grad(dh0, dgates_t, rdp, recurrent_kernel_g, recg, hm, B, H, 0, 4)
    _masked_input_grads(dx, dkernel, dgates, x, dp, kernel_g, xm, pm, dw, B, T, C, H, 4, G)
    for g in range(4):
        _masked_recurrent_weight_grad(drecurrent_kernel, g, dgates, g * H, h_tm1_seq, rdp, hseq, pm, dw, B, T, H)
    for b in range(B):
        for t in range(T):
            for k in range(G):
                dbias[k] += dgates[b, t, k]


# -- GRU ------------------------------------------------------------------------------------

@njit(**_JIT)
def _gru_forward_train_rdrop(y_out, h, h_tm1_seq, preact, gates, hh_rec_seq, rec, rec_h, rh, x, kernel_g,
                             recurrent_kernel_g, input_bias, recurrent_bias, dp, rdp, xm, pm, hm, recg, B, T, C, H,
                             activation, recurrent_activation, go_backwards, return_sequences, reset_after):
    # _gru_forward_train with masks: gate g reads x * dp[g] and h_tm1 * rdp[g];
    # without reset_after, the candidate's product is (r * (h_tm1 * rdp[2])) @ U_h.
    _masked_projection(preact, x, dp, kernel_g, xm, pm, B, T, C, H, 3)
    for s in range(T):
        t = T - 1 - s if go_backwards else s
        if reset_after:
            _masked_recurrent(rec, h, rdp, recurrent_kernel_g, hm, recg, B, H, 0, 3)
            for b in range(B):
                for j in range(H):
                    h_tm1 = h[b, j]
                    h_tm1_seq[b, t, j] = h_tm1
                    a_z = preact[b, t, j] + input_bias[j] + rec[b, j] + recurrent_bias[j]
                    a_r = preact[b, t, H + j] + input_bias[H + j] + rec[b, H + j] + recurrent_bias[H + j]
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
                    h[b, j] = z * h_tm1 + (1.0 - z) * hh
        else:
            _masked_recurrent(rec, h, rdp, recurrent_kernel_g, hm, recg, B, H, 0, 2)
            for b in range(B):
                for j in range(H):
                    h_tm1_seq[b, t, j] = h[b, j]
                    a_r = preact[b, t, H + j] + input_bias[H + j] + rec[b, H + j]
                    r = apply(recurrent_activation, a_r)
                    preact[b, t, H + j] = a_r
                    gates[b, t, H + j] = r
                    rh[b, j] = r * (h[b, j] * rdp[2, b, j])
                    hh_rec_seq[b, t, j] = rh[b, j]
            np.dot(rh, recurrent_kernel_g[2], rec_h)
            for b in range(B):
                for j in range(H):
                    a_z = preact[b, t, j] + input_bias[j] + rec[b, j]
                    a_h = preact[b, t, 2 * H + j] + input_bias[2 * H + j] + rec_h[b, j]
                    z = apply(recurrent_activation, a_z)
                    hh = apply(activation, a_h)
                    preact[b, t, j] = a_z
                    preact[b, t, 2 * H + j] = a_h
                    gates[b, t, j] = z
                    gates[b, t, 2 * H + j] = hh
                    h[b, j] = z * h[b, j] + (1.0 - z) * hh
        _write_output(y_out, h, s, B, H, return_sequences, s == T - 1)


@njit(**_JIT)
def _gru_backward_rdrop(dx, dh0, dkernel, drecurrent_kernel, dinput_bias, drecurrent_bias, dgates, dhh_rec_seq,
                        dgates_t, dh_rec, dhh_t, dw, dy, dh_n, h_tm1_seq, preact, gates, hh_rec_seq, x, kernel_g,
                        recurrent_kernel_g, dp, rdp, xm, pm, hm, recg, hseq, B, T, C, H, activation,
                        recurrent_activation, go_backwards, return_sequences, reset_after):
    G = 3 * H
    apply_grad_block(dgates, preact, gates, recurrent_activation, 0, 2 * H)
    apply_grad_block(dgates, preact, gates, activation, 2 * H, G)
    for b in range(B):
        for j in range(H):
            dh0[b, j] = dh_n[b, j]
            if not return_sequences:
                dh0[b, j] += dy[b, 0, j]
    for s in range(T - 1, -1, -1):
        t = T - 1 - s if go_backwards else s
        for b in range(B):
            for j in range(H):
                if return_sequences:
                    dh0[b, j] += dy[b, s, j]
                dh = dh0[b, j]
                z = gates[b, t, j]
                hh = gates[b, t, 2 * H + j]
                h_tm1 = h_tm1_seq[b, t, j]
                # forward: h = z * h_tm1 + (1 - z) * hh (h_tm1 unmasked)
                dz = dh * (h_tm1 - hh)
                dhh = dh * (1.0 - z)
                dh0[b, j] = dh * z
                da_h = dhh * dgates[b, t, 2 * H + j]
                da_z = dz * dgates[b, t, j]
                dgates[b, t, j] = da_z
                dgates[b, t, 2 * H + j] = da_h
                dgates_t[b, j] = da_z
                if reset_after:
                    # forward: a_h = x_h + input_bias_h + r * hh_rec, hh_rec = (h_tm1 * rdp[2]) @ U_h + rb_h
                    r = gates[b, t, H + j]
                    dr = da_h * hh_rec_seq[b, t, j]
                    dhh_rec = da_h * r
                    da_r = dr * dgates[b, t, H + j]
                    dgates[b, t, H + j] = da_r
                    dgates_t[b, H + j] = da_r
                    dgates_t[b, 2 * H + j] = dhh_rec
                    dhh_rec_seq[b, t, j] = dhh_rec
                else:
                    dhh_t[b, j] = da_h
                    dhh_rec_seq[b, t, j] = da_h
        if reset_after:
            _masked_recurrent_grad(dh0, dgates_t, rdp, recurrent_kernel_g, recg, hm, B, H, 0, 3)
        else:
            # forward: a_h = x_h + input_bias_h + rh @ U_h, rh = r * (h_tm1 * rdp[2])
            np.dot(dhh_t, recurrent_kernel_g[2].T, dh_rec)
            for b in range(B):
                for j in range(H):
                    r = gates[b, t, H + j]
                    m = rdp[2, b, j]
                    dr = dh_rec[b, j] * h_tm1_seq[b, t, j] * m
                    dh0[b, j] += dh_rec[b, j] * r * m
                    da_r = dr * dgates[b, t, H + j]
                    dgates[b, t, H + j] = da_r
                    dgates_t[b, H + j] = da_r
            _masked_recurrent_grad(dh0, dgates_t, rdp, recurrent_kernel_g, recg, hm, B, H, 0, 2)
    _masked_input_grads(dx, dkernel, dgates, x, dp, kernel_g, xm, pm, dw, B, T, C, H, 3, G)
    for b in range(B):
        for t in range(T):
            for k in range(G):
                dinput_bias[k] += dgates[b, t, k]
    for g in range(2):
        _masked_recurrent_weight_grad(drecurrent_kernel, g, dgates, g * H, h_tm1_seq, rdp, hseq, pm, dw, B, T, H)
    if reset_after:
        _masked_recurrent_weight_grad(drecurrent_kernel, 2, dhh_rec_seq, 0, h_tm1_seq, rdp, hseq, pm, dw, B, T, H)
        for b in range(B):
            for t in range(T):
                for k in range(2 * H):
                    drecurrent_bias[k] += dgates[b, t, k]
                for k in range(H):
                    drecurrent_bias[2 * H + k] += dhh_rec_seq[b, t, k]
    else:
        # the candidate's operand rh = r * h_tm1 * rdp[2] is saved whole in hh_rec_seq
        dwh = dw[:H * H].reshape((H, H))
        np.dot(hh_rec_seq.reshape((B * T, H)).T, dhh_rec_seq.reshape((B * T, H)), dwh)
        for m in range(H):
            for j in range(H):
                drecurrent_kernel[m, 2 * H + j] += dwh[m, j]
