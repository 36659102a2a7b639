# cython: language_level=3
# LSTM forward, forward-train and backward kernels in Cython, compiled into
# rnnengine.kernels._cy_lstm: the twins of rnnengine/kernels/numba_lstm.py.
#
# Contract: rnnengine/kernels/__init__.py (argument order, shapes, semantics).
# float32 or float64 through the fused `floating` type; every buffer
# C-contiguous; weights and x may be read-only. The def entry turns memoryviews
# into pointers and releases the GIL; the work is in the `noexcept nogil`
# pointer kernel, which never allocates and never raises.
#
# Design: for float32 batches of any size, each step is one
# register-tiled pass rec = bias + x_t @ kernel + h_tm1 @ recurrent_kernel
# (src/_rec_gemm.h, _step_product in _blas.pxd) and one fused elementwise
# pass: no (B, T, 4H) projection is written and read back, and the tiled
# kernel reads the weights in place where sgemm would repack them every step.
# (A batch-1 split fuses each chunk's columns the same way: src/_split.pxd.)
# Otherwise (float64, or a build without the vector
# kernel) one GEMM projects every timestep (x viewed as (B*T, C)), then each
# step is one product h_tm1 @ recurrent_kernel (_recurrent_product) and the
# elementwise pass, as in the Numba kernel. Threads: _gates.pxd.
#
# Training: forward_train is the forward with the saved buffers filled (preact
# doubles as the projection scratch). The backward runs its time loop per row
# block, as the forward does: a step is one elementwise pass (c recomputed as
# f * c_tm1 + i * g, its activation with the forward's activate_block) and one
# product dgates_t @ recurrent_kernel^T; dx = dgates @ kernel^T follows for the
# block's rows. The weight gradients are sums over every (b, t), so they come
# after all blocks, as GEMMs with beta = 1 straight into the accumulators
# (Numba's dw scratch is not needed), split over threads by output columns so
# that no two threads add into the same element.
from cpython.pycapsule cimport PyCapsule_New

from _call cimport lstm_d, lstm_f
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy

from _blas cimport (NoTrans, Trans, _det, _fused_step, _gemm, _input_product, _join_watch, _load_det,
                   _load_interrupt, _recurrent_product, _step_product, _stopped, _unwatch, _watch)
from _gates cimport (RNNENGINE_BOUNDSCHECK, _batch_threads, _expect_shape,
                     _set_gate_threads, _set_min_work, activate_block, apply,
                     apply_grad_block, apply_grad_rows, save_preact,
                     rnnengine_gate_threads, rnnengine_min_work)
from _mask cimport (_masked_dout, _row_runs, _run_end, _skip_row, _start_backward, _step_dout, _step_runs,
                   _take_valid_rows, _write_output)
from _split cimport (SPLIT_ZBUF, SplitCall, _cache_aligned, _chunk_scratch, _load_pool,
                     _pool_acquire, _pool_release, _set_split_thresholds, _split_call,
                     _split_chunks, _split_output, _split_step, rnnengine_split_min_step,
                     rnnengine_split_wake_work)

_load_pool()
_load_det()
_load_interrupt()


cdef inline void _lstm_units(floating* h_out, floating* c_b, const floating* xproj_bt,
                             floating* z, const floating* bias, Py_ssize_t n,
                             Py_ssize_t H, Py_ssize_t zs, int activation,
                             int recurrent_activation) noexcept nogil:
    # n units of one batch row: c_b and h_out are (n,); xproj_bt and bias point
    # at the first unit's i column, the f, c, o columns H, 2H, 3H further
    # (Keras's order); z (scratch, overwritten with the gates) likewise with
    # blocks zs apart. xproj_bt NULL: z already holds the whole pre-activation
    # (x_t, h and bias). h_out may be this row's h_tm1 (its product is in z).
    # Each activation runs over a whole block (activate_block) so it vectorizes.
    cdef Py_ssize_t j
    if xproj_bt != NULL:
        for j in range(n):
            z[j] += xproj_bt[j] + bias[j]
            z[zs + j] += xproj_bt[H + j] + bias[H + j]
            z[2 * zs + j] += xproj_bt[2 * H + j] + bias[2 * H + j]
            z[3 * zs + j] += xproj_bt[3 * H + j] + bias[3 * H + j]
    activate_block(z, n, recurrent_activation)  # i
    activate_block(z + zs, n, recurrent_activation)  # f
    activate_block(z + 2 * zs, n, activation)  # g = act(zc)
    activate_block(z + 3 * zs, n, recurrent_activation)  # o
    for j in range(n):
        c_b[j] = z[zs + j] * c_b[j] + z[j] * z[2 * zs + j]  # c = f * c_tm1 + i * g
        h_out[j] = c_b[j]
    activate_block(h_out, n, activation)
    for j in range(n):
        h_out[j] *= z[3 * zs + j]  # h = o * act(c)


cdef inline void _lstm_row(floating* h_b, floating* c_b, const floating* xproj_bt,
                           floating* z, const floating* bias,
                           Py_ssize_t H, int activation,
                           int recurrent_activation) noexcept nogil:
    # h_b and c_b are (H,); xproj_bt, z and bias are (4H,): a whole row.
    _lstm_units(h_b, c_b, xproj_bt, z, bias, H, H, H, activation, recurrent_activation)


cdef void _lstm_chunk(void* ctx, int stage, int chunk) noexcept nogil:
    # One ticket of a split call (src/_split.pxd): this chunk's units of a step.
    cdef SplitCall* a = <SplitCall*>ctx
    cdef Py_ssize_t u0, n, s, t, b
    cdef float zbuf[SPLIT_ZBUF]
    cdef float* z = _cache_aligned(zbuf)  # (B, 4, n): this chunk's own
    if not _split_step(a, z, stage, chunk, &u0, &n, &s, &t):
        return
    for b in range(a.B):
        _lstm_units(a.hs[1 - s % 2] + b * a.Hp + u0, a.c + b * a.Hp + u0,
                    a.xproj + (b * a.T + t) * a.G + u0 if a.xproj != NULL else NULL,
                    z + b * 4 * n, a.bias + u0, n, a.H, n, a.activation, a.recurrent_activation)
    _split_output(a, a.hs[1 - s % 2], s, u0, n)


cdef void _lstm_forward(floating* y_out, floating* h, floating* c, floating* xproj,
                        floating* rec, const floating* x, const unsigned char* keep,
                        const floating* kernel,
                        const floating* recurrent_kernel, const floating* bias,
                        Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                        int activation, int recurrent_activation,
                        bint go_backwards, bint return_sequences,
                        bint zero_output_for_mask) noexcept nogil:
    # y_out is (B, T or 1, H); h and c are (B, H), initial state in, final out;
    # xproj is (B, T, 4H); rec is (B, 4H); x is (B, T, C); keep is (B, T) or
    # NULL (src/_mask.pxd); kernel is (C, 4H); recurrent_kernel is (H, 4H);
    # bias is (4H,)
    cdef Py_ssize_t K = 4 * H
    cdef Py_ssize_t s, t, b, s1
    if keep != NULL and B == 1:  # the valid runs, each an unmasked call (_mask.pxd)
        s = 0
        while s < T:
            t = T - 1 - s if go_backwards else s
            if keep[t]:
                s1 = _run_end(keep, T, go_backwards, s)
                _lstm_forward(y_out + s * H if return_sequences else y_out, h, c, xproj, rec,
                              x + (T - s1 if go_backwards else s) * C, NULL, kernel,
                              recurrent_kernel, bias, 1, s1 - s, C, H, activation,
                              recurrent_activation, go_backwards, return_sequences, 0)
                s = s1  # (a run that ends the sequence wrote the last output itself)
            else:
                _write_output(y_out, h, keep, 1, T, H, s, t, return_sequences, zero_output_for_mask)
                s += 1
        return
    # float32: each step is one register-tiled pass
    # rec = bias + x_t @ kernel + h_tm1 @ recurrent_kernel (src/_rec_gemm.h),
    # so the (B, T, 4H) projection is never written and read back (13 MB for
    # T2; as a GEMM of K = C rows it also ran at half the tiled pass's speed).
    cdef bint fused = _fused_step(x, B)
    cdef int chunks = _split_chunks(B, T, H, K) if keep == NULL else 1
    cdef int pooled = -1  # _pool_acquire's answer: 1 split, 0 or 2 alone
    if floating is float:
        if chunks > 1:
            pooled = _pool_acquire(_lstm_chunk, H, B, T, chunks,
                                   _chunk_scratch(recurrent_kernel, H, 4, chunks),
                                   B * T * (C + H) * K)
            if pooled == 1:
                _split_call(_lstm_chunk, y_out, h, c, NULL if fused else xproj, x, kernel,
                            recurrent_kernel, bias, NULL, B, T, C, H, 4, activation,
                            recurrent_activation,
                            go_backwards, return_sequences, chunks)
                _pool_release(1)
                return
    if floating is float and chunks > 1 and not fused:  # may split, runs alone: the split's bits
        _recurrent_product(xproj, x, kernel, <int>(B * T), <int>C, <int>K, <int>K, <int>K)
    elif not fused:
        # xproj.reshape(B * T, 4H)[:] = x.reshape(B * T, C) @ kernel
        _input_product(xproj, x, kernel, B * T, C, K)
    for s in range(T):
        if _stopped():  # SIGINT: the driver raises KeyboardInterrupt
            break
        t = T - 1 - s if go_backwards else s
        if not _step_runs(keep, B, T, t):
            pass
        elif fused:
            _step_product(rec, h, x, kernel, recurrent_kernel, bias, B, T, C, H, K, t)
            for b in range(B):
                if _row_runs(keep, T, b, t):  # a masked row carries its state through
                    _lstm_row(h + b * H, c + b * H, NULL, rec + b * K,
                              bias, H, activation, recurrent_activation)
        else:
            # rec[:] = h_tm1 @ recurrent_kernel
            _recurrent_product(rec, h, recurrent_kernel, <int>B, <int>H, <int>K, <int>K, <int>K)
            for b in range(B):
                if _row_runs(keep, T, b, t):
                    _lstm_row(h + b * H, c + b * H, xproj + (b * T + t) * K, rec + b * K,
                              bias, H, activation, recurrent_activation)
        # y_out[:, s] = h (every step), or y_out[:, 0] = h (last step only)
        _write_output(y_out, h, keep, B, T, H, s, t, return_sequences, zero_output_for_mask)
    if pooled >= 0:
        _pool_release(pooled)


def lstm_forward(floating[:, :, ::1] y_out,  # OUT
                 floating[:, ::1] h,  # IN/OUT
                 floating[:, ::1] c,  # IN/OUT
                 floating[:, :, ::1] xproj,  # SCRATCH
                 floating[:, ::1] rec,  # SCRATCH
                 const floating[:, :, ::1] x,  # IN
                 const unsigned char[:, ::1] keep,  # IN: (B, T), or empty for no mask
                 const floating[:, ::1] kernel,  # IN
                 const floating[:, ::1] recurrent_kernel,  # IN
                 const floating[::1] bias,  # IN
                 Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                 int activation, int recurrent_activation, bint go_backwards,
                 bint return_sequences, bint zero_output_for_mask):
    """LSTM forward over a whole sequence; see rnnengine/kernels/__init__.py."""
    if RNNENGINE_BOUNDSCHECK:
        _expect_shape("y_out", y_out.shape, 3, B, T if return_sequences else 1, H)
        _expect_shape("h", h.shape, 2, B, H)
        _expect_shape("c", c.shape, 2, B, H)
        _expect_shape("xproj", xproj.shape, 3, B, T, 4 * H)
        _expect_shape("rec", rec.shape, 2, B, 4 * H)
        _expect_shape("x", x.shape, 3, B, T, C)
        _expect_shape("kernel", kernel.shape, 2, C, 4 * H)
        _expect_shape("recurrent_kernel", recurrent_kernel.shape, 2, H, 4 * H)
        _expect_shape("bias", bias.shape, 1, 4 * H)
        if keep.shape[0] != 0:
            _expect_shape("keep", keep.shape, 2, B, T)
    # Split the batch into n contiguous row blocks, one per thread, each running
    # the whole sequence: rows never interact (see _batch_threads in _gates.pxd).
    cdef Py_ssize_t T_out = T if return_sequences else 1
    cdef int n = _batch_threads(B, B * T * (C + H) * 4 * H)
    cdef Py_ssize_t i, b0, nb
    cdef floating* y_p = &y_out[0, 0, 0]
    cdef floating* h_p = &h[0, 0]
    cdef floating* c_p = &c[0, 0]
    cdef floating* xp_p = &xproj[0, 0, 0]
    cdef floating* rec_p = &rec[0, 0]
    cdef const floating* x_p = &x[0, 0, 0]
    cdef const unsigned char* k_p = &keep[0, 0] if keep.shape[0] != 0 else NULL
    cdef int watched = _watch(B * T * (C + H) * 4 * H)
    cdef int was
    with nogil:
        if n == 1:
            _lstm_forward(y_p, h_p, c_p, xp_p, rec_p, x_p, k_p, &kernel[0, 0], &recurrent_kernel[0, 0],
                          &bias[0], B, T, C, H, activation, recurrent_activation, go_backwards,
                          return_sequences, zero_output_for_mask)
        else:
            for i in prange(n, schedule='static', num_threads=n):
                was = _join_watch(watched)
                b0 = i * B // n
                nb = (i + 1) * B // n - b0
                _lstm_forward(y_p + b0 * T_out * H, h_p + b0 * H, c_p + b0 * H, xp_p + b0 * T * 4 * H,
                              rec_p + b0 * 4 * H, x_p + b0 * T * C, k_p + b0 * T if k_p != NULL else NULL,
                              &kernel[0, 0], &recurrent_kernel[0, 0], &bias[0], nb, T, C, H, activation,
                              recurrent_activation, go_backwards, return_sequences, zero_output_for_mask)
                _join_watch(was)
    _unwatch(watched)


# -- training -----------------------------------------------------------------------------

cdef void _lstm_forward_train(floating* y_out, floating* h, floating* c,
                              floating* h_tm1_seq, floating* c_tm1_seq, floating* preact,
                              floating* gates, floating* rec, const floating* x,
                              const unsigned char* keep,
                              const floating* kernel, const floating* recurrent_kernel,
                              const floating* bias, Py_ssize_t B, Py_ssize_t T,
                              Py_ssize_t C, Py_ssize_t H, int activation,
                              int recurrent_activation, bint go_backwards,
                              bint return_sequences, bint zero_output_for_mask) noexcept nogil:
    # y_out is (B, T or 1, H); h and c are (B, H), initial state in, final out;
    # h_tm1_seq and c_tm1_seq (B, T, H), preact and gates (B, T, 4H), saved at
    # the input time t; rec is (B, 4H) scratch; x is (B, T, C); keep is (B, T)
    # or NULL (src/_mask.pxd); kernel is (C, 4H); recurrent_kernel is (H, 4H);
    # bias is (4H,)
    cdef Py_ssize_t K = 4 * H
    cdef Py_ssize_t s, t, b, j
    cdef floating* z
    cdef floating* pa
    cdef floating* hb
    cdef floating* cb
    # The pre-activations as _lstm_forward computes them, so that this pass
    # gives its results bit for bit: fused (float32), each
    # step's one tiled pass; otherwise preact.reshape(B * T, 4H)[:] =
    # x.reshape(B * T, C) @ kernel, and each step adds bias + rec in place.
    cdef bint fused = _fused_step(x, B)
    if not fused:
        _input_product(preact, x, kernel, B * T, C, K)
    for s in range(T):
        if _stopped():  # SIGINT: the driver raises KeyboardInterrupt
            break
        t = T - 1 - s if go_backwards else s
        if not _step_runs(keep, B, T, t):
            pass
        elif fused:
            _step_product(rec, h, x, kernel, recurrent_kernel, bias, B, T, C, H, K, t)
        else:
            # rec[:] = h_tm1 @ recurrent_kernel
            _recurrent_product(rec, h, recurrent_kernel, <int>B, <int>H, <int>K, <int>K, <int>K)
        for b in range(B):
            z = rec + b * K
            pa = preact + (b * T + t) * K
            hb = h + b * H
            cb = c + b * H
            if not _row_runs(keep, T, b, t):  # a masked row carries its states through
                _skip_row(h_tm1_seq + (b * T + t) * H, hb, pa, gates + (b * T + t) * K, H, K)
                memcpy(c_tm1_seq + (b * T + t) * H, cb, H * sizeof(floating))
                continue
            memcpy(h_tm1_seq + (b * T + t) * H, hb, H * sizeof(floating))
            memcpy(c_tm1_seq + (b * T + t) * H, cb, H * sizeof(floating))
            save_preact(z, pa, bias, K, fused)
            activate_block(z, 2 * H, recurrent_activation)  # i, f
            activate_block(z + 2 * H, H, activation)  # g = act(zc)
            activate_block(z + 3 * H, H, recurrent_activation)  # o
            memcpy(gates + (b * T + t) * K, z, K * sizeof(floating))
            for j in range(H):
                cb[j] = z[H + j] * cb[j] + z[j] * z[2 * H + j]  # c = f * c_tm1 + i * g
                hb[j] = cb[j]
            activate_block(hb, H, activation)
            for j in range(H):
                hb[j] *= z[3 * H + j]  # h = o * act(c)
        # y_out[:, s] = h (every step), or y_out[:, 0] = h (last step only); masked: _mask.pxd
        _write_output(y_out, h, keep, B, T, H, s, t, return_sequences, zero_output_for_mask)


cdef void _lstm_backward_rows(floating* dx, floating* dh0, floating* dc0,
                              floating* dgates, floating* dgates_t, floating* dh_rec,
                              floating* dcarry, const floating* dy,
                              const floating* dh_n, const floating* dc_n,
                              const floating* c_tm1_seq, const floating* preact,
                              const floating* gates, const unsigned char* keep,
                              const floating* kernel,
                              const floating* recurrent_kernel, Py_ssize_t B,
                              Py_ssize_t T, Py_ssize_t C, Py_ssize_t H, int activation,
                              int recurrent_activation, bint go_backwards,
                              bint return_sequences, bint zero_output_for_mask) noexcept nogil:
    # The per-row part of the backward for B rows: dx (B, T, C), dh0 and dc0
    # (B, H) written, dh0 and dc0 carrying the running dh_t and dc_t; dgates
    # (B, T, 4H) the gates' derivatives, then the gradient w.r.t. preact;
    # dgates_t (B, 4H) scratch; dh_rec and dcarry (B, H) scratch with a mask
    # (keep (B, T), or NULL: src/_mask.pxd; a masked row's step passes dh and
    # dc on unchanged); dy (B, T or 1, H); dh_n and dc_n (B, H), may
    # alias dh0 and dc0; c_tm1_seq (B, T, H), preact and gates (B, T, 4H).
    cdef Py_ssize_t G = 4 * H
    cdef Py_ssize_t T_out = T if return_sequences else 1
    cdef Py_ssize_t s, t, b, j
    cdef floating i_, f, g, o, c_tm1, act_c, d_h, d_c, d_o, dzi, dzf, dzc, dzo
    cdef floating* dh
    cdef floating* dc
    cdef floating* dg
    cdef floating* w
    cdef const floating* gt
    cdef const floating* ct
    cdef const floating* dyb
    # dgates starts as the gate activations' derivatives, e.g. d(i)/d(zi).
    apply_grad_rows(dgates, preact, gates, B * T, G, 0, 2 * H, recurrent_activation)
    apply_grad_rows(dgates, preact, gates, B * T, G, 2 * H, 3 * H, activation)
    apply_grad_rows(dgates, preact, gates, B * T, G, 3 * H, G, recurrent_activation)
    for b in range(B):
        for j in range(H):
            dc0[b * H + j] = dc_n[b * H + j]
    _start_backward(dh0, dcarry, dy, dh_n, keep, B, H, return_sequences)
    for s in range(T - 1, -1, -1):
        if _stopped():  # SIGINT: the driver raises KeyboardInterrupt
            break
        t = T - 1 - s if go_backwards else s
        for b in range(B):
            dh = dh0 + b * H
            dc = dc0 + b * H
            dg = dgates + (b * T + t) * G
            gt = gates + (b * T + t) * G
            ct = c_tm1_seq + (b * T + t) * H
            w = dgates_t + b * G
            dyb = dy + (b * T_out + (s if return_sequences else 0)) * H
            if keep != NULL:
                if not keep[b * T + t]:
                    _masked_dout(dcarry + b * H, w, dg, dyb, H, G, return_sequences,
                                 zero_output_for_mask)
                    continue
                _step_dout(dh, dcarry + b * H, dyb, H, return_sequences)
            elif return_sequences:
                for j in range(H):
                    dh[j] += dyb[j]
            # This row of dgates_t holds c (w[:H]), act(c) (w[H:2H]) and
            # act'(c) (w[2H:3H]) until the loop below overwrites element j of
            # each block with the gradient, after reading it. c is recomputed
            # as in the forward: c = f * c_tm1 + i * g.
            for j in range(H):
                w[j] = gt[H + j] * ct[j] + gt[j] * gt[2 * H + j]
                w[H + j] = w[j]
            activate_block(w + H, H, activation)
            apply_grad_block(w + 2 * H, w, w + H, H, activation)
            for j in range(H):
                i_ = gt[j]
                f = gt[H + j]
                g = gt[2 * H + j]
                o = gt[3 * H + j]
                c_tm1 = ct[j]
                act_c = w[H + j]
                d_h = dh[j]
                # forward: h = o * act(c)
                d_o = d_h * act_c
                d_c = dc[j] + d_h * o * w[2 * H + j]
                # forward: c = f * c_tm1 + i * g
                dc[j] = d_c * f
                # forward: i, f, g, o = ract(zi), ract(zf), act(zc), ract(zo)
                dzi = d_c * g * dg[j]
                dzf = d_c * c_tm1 * dg[H + j]
                dzc = d_c * i_ * dg[2 * H + j]
                dzo = d_o * dg[3 * H + j]
                w[j] = dzi
                w[H + j] = dzf
                w[2 * H + j] = dzc
                w[3 * H + j] = dzo
                dg[j] = dzi
                dg[H + j] = dzf
                dg[2 * H + j] = dzc
                dg[3 * H + j] = dzo
        if keep != NULL and not _step_runs(keep, B, T, t):
            continue  # no row ran step t: every dh passes on unchanged, no product
        # forward: rec = h_tm1 @ recurrent_kernel, so dh_tm1 = dz @ recurrent_kernel^T
        # (a masked row's dh_t passes to the step before unchanged)
        _gemm(NoTrans, Trans, <int>B, <int>H, <int>G, 1, dgates_t, <int>G,
              recurrent_kernel, <int>G, 0, dh0 if keep == NULL else dh_rec, <int>H)
        if keep != NULL:
            _take_valid_rows(dh0, dh_rec, keep, B, T, H, t, False)
    # forward: preact = x @ kernel + ..., so dx = dgates @ kernel^T
    _gemm(NoTrans, Trans, <int>(B * T), <int>C, <int>G, 1, dgates, <int>G,
          kernel, <int>G, 0, dx, <int>C)


cdef void _weight_grads_cols(floating* dkernel, floating* drecurrent_kernel,
                             floating* dbias, const floating* dgates,
                             const floating* x, const floating* h_tm1_seq,
                             Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t G,
                             Py_ssize_t g0, Py_ssize_t g1) noexcept nogil:
    # Columns g0:g1 of the weight gradients, summed over all N = B*T rows:
    # dkernel (C, G), drecurrent_kernel (H, G), dbias (G,) accumulated;
    # dgates (N, G), x (N, C), h_tm1_seq (N, H).
    cdef Py_ssize_t n, k
    if g1 <= g0 or _stopped():  # SIGINT: the gradients are dropped
        return
    # dkernel[:, g0:g1] += x^T @ dgates[:, g0:g1]
    _gemm(Trans, NoTrans, <int>C, <int>(g1 - g0), <int>N, 1, x, <int>C,
          dgates + g0, <int>G, 1, dkernel + g0, <int>G)
    # drecurrent_kernel[:, g0:g1] += h_tm1^T @ dgates[:, g0:g1]
    _gemm(Trans, NoTrans, <int>H, <int>(g1 - g0), <int>N, 1, h_tm1_seq, <int>H,
          dgates + g0, <int>G, 1, drecurrent_kernel + g0, <int>G)
    # dbias[g0:g1] += dgates[:, g0:g1].sum(axis=0)
    for n in range(N):
        for k in range(g0, g1):
            dbias[k] += dgates[n * G + k]


def lstm_forward_train(floating[:, :, ::1] y_out,  # OUT
                       floating[:, ::1] h,  # IN/OUT
                       floating[:, ::1] c,  # IN/OUT
                       floating[:, :, ::1] h_tm1_seq,  # OUT (saved)
                       floating[:, :, ::1] c_tm1_seq,  # OUT (saved)
                       floating[:, :, ::1] preact,  # OUT (saved)
                       floating[:, :, ::1] gates,  # OUT (saved)
                       floating[:, ::1] rec,  # SCRATCH
                       const floating[:, :, ::1] x,  # IN
                       const unsigned char[:, ::1] keep,  # IN: (B, T), or empty for no mask
                       const floating[:, ::1] kernel,  # IN
                       const floating[:, ::1] recurrent_kernel,  # IN
                       const floating[::1] bias,  # IN
                       Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                       int activation, int recurrent_activation, bint go_backwards,
                       bint return_sequences, bint zero_output_for_mask):
    """LSTM forward that saves what the backward reads; see rnnengine/kernels/__init__.py."""
    if RNNENGINE_BOUNDSCHECK:
        _expect_shape("y_out", y_out.shape, 3, B, T if return_sequences else 1, H)
        _expect_shape("h", h.shape, 2, B, H)
        _expect_shape("c", c.shape, 2, B, H)
        _expect_shape("h_tm1_seq", h_tm1_seq.shape, 3, B, T, H)
        _expect_shape("c_tm1_seq", c_tm1_seq.shape, 3, B, T, H)
        _expect_shape("preact", preact.shape, 3, B, T, 4 * H)
        _expect_shape("gates", gates.shape, 3, B, T, 4 * H)
        _expect_shape("rec", rec.shape, 2, B, 4 * H)
        _expect_shape("x", x.shape, 3, B, T, C)
        _expect_shape("kernel", kernel.shape, 2, C, 4 * H)
        _expect_shape("recurrent_kernel", recurrent_kernel.shape, 2, H, 4 * H)
        _expect_shape("bias", bias.shape, 1, 4 * H)
        if keep.shape[0] != 0:
            _expect_shape("keep", keep.shape, 2, B, T)
    cdef Py_ssize_t G = 4 * H
    cdef Py_ssize_t T_out = T if return_sequences else 1
    cdef int n = _batch_threads(B, B * T * (C + H) * G)
    cdef Py_ssize_t i, b0, nb
    cdef const unsigned char* kp_p = &keep[0, 0] if keep.shape[0] != 0 else NULL
    cdef floating* y_p = &y_out[0, 0, 0]
    cdef floating* h_p = &h[0, 0]
    cdef floating* c_p = &c[0, 0]
    cdef floating* htm1_p = &h_tm1_seq[0, 0, 0]
    cdef floating* ctm1_p = &c_tm1_seq[0, 0, 0]
    cdef floating* pa_p = &preact[0, 0, 0]
    cdef floating* g_p = &gates[0, 0, 0]
    cdef floating* rec_p = &rec[0, 0]
    cdef const floating* x_p = &x[0, 0, 0]
    cdef const floating* k_p = &kernel[0, 0]
    cdef const floating* rk_p = &recurrent_kernel[0, 0]
    cdef const floating* b_p = &bias[0]
    cdef int watched = _watch(B * T * (C + H) * G)
    cdef int was
    with nogil:
        if n == 1:
            _lstm_forward_train(y_p, h_p, c_p, htm1_p, ctm1_p, pa_p, g_p, rec_p, x_p, kp_p, k_p, rk_p,
                                b_p, B, T, C, H, activation, recurrent_activation,
                                go_backwards, return_sequences, zero_output_for_mask)
        else:
            # rows never interact: one contiguous row block per thread
            for i in prange(n, schedule='static', num_threads=n):
                was = _join_watch(watched)
                b0 = i * B // n
                nb = (i + 1) * B // n - b0
                _lstm_forward_train(
                    y_p + b0 * T_out * H, h_p + b0 * H, c_p + b0 * H, htm1_p + b0 * T * H,
                    ctm1_p + b0 * T * H, pa_p + b0 * T * G, g_p + b0 * T * G, rec_p + b0 * G,
                    x_p + b0 * T * C, kp_p + b0 * T if kp_p != NULL else NULL, k_p, rk_p, b_p, nb,
                    T, C, H, activation, recurrent_activation, go_backwards, return_sequences,
                    zero_output_for_mask)
                _join_watch(was)
    _unwatch(watched)


def lstm_backward(floating[:, :, ::1] dx,  # OUT
                  floating[:, ::1] dh0,  # OUT
                  floating[:, ::1] dc0,  # OUT
                  floating[:, ::1] dkernel,  # IN/OUT (+=)
                  floating[:, ::1] drecurrent_kernel,  # IN/OUT (+=)
                  floating[::1] dbias,  # IN/OUT (+=)
                  floating[:, :, ::1] dgates,  # SCRATCH
                  floating[:, ::1] dgates_t,  # SCRATCH
                  floating[:, ::1] dh_rec,  # SCRATCH (with a mask)
                  floating[:, ::1] dcarry,  # SCRATCH (with a mask)
                  floating[::1] dw,  # SCRATCH (unused here)
                  const floating[:, :, ::1] dy,  # IN
                  const floating[:, ::1] dh_n,  # IN (may alias dh0)
                  const floating[:, ::1] dc_n,  # IN (may alias dc0)
                  const floating[:, :, ::1] h_tm1_seq,  # IN (saved)
                  const floating[:, :, ::1] c_tm1_seq,  # IN (saved)
                  const floating[:, :, ::1] preact,  # IN (saved)
                  const floating[:, :, ::1] gates,  # IN (saved)
                  const floating[:, :, ::1] x,  # IN
                  const unsigned char[:, ::1] keep,  # IN: (B, T), or empty for no mask
                  const floating[:, ::1] kernel,  # IN
                  const floating[:, ::1] recurrent_kernel,  # IN
                  Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                  int activation, int recurrent_activation, bint go_backwards,
                  bint return_sequences, bint zero_output_for_mask):
    """LSTM backward over a whole sequence; see rnnengine/kernels/__init__.py."""
    if RNNENGINE_BOUNDSCHECK:
        _expect_shape("dx", dx.shape, 3, B, T, C)
        _expect_shape("dh0", dh0.shape, 2, B, H)
        _expect_shape("dc0", dc0.shape, 2, B, H)
        _expect_shape("dkernel", dkernel.shape, 2, C, 4 * H)
        _expect_shape("drecurrent_kernel", drecurrent_kernel.shape, 2, H, 4 * H)
        _expect_shape("dbias", dbias.shape, 1, 4 * H)
        _expect_shape("dgates", dgates.shape, 3, B, T, 4 * H)
        _expect_shape("dgates_t", dgates_t.shape, 2, B, 4 * H)
        _expect_shape("dh_rec", dh_rec.shape, 2, B, H)
        _expect_shape("dcarry", dcarry.shape, 2, B, H)
        _expect_shape("dw", dw.shape, 1, max(C, H) * 4 * H)
        _expect_shape("dy", dy.shape, 3, B, T if return_sequences else 1, H)
        _expect_shape("dh_n", dh_n.shape, 2, B, H)
        _expect_shape("dc_n", dc_n.shape, 2, B, H)
        _expect_shape("h_tm1_seq", h_tm1_seq.shape, 3, B, T, H)
        _expect_shape("c_tm1_seq", c_tm1_seq.shape, 3, B, T, H)
        _expect_shape("preact", preact.shape, 3, B, T, 4 * H)
        _expect_shape("gates", gates.shape, 3, B, T, 4 * H)
        _expect_shape("x", x.shape, 3, B, T, C)
        _expect_shape("kernel", kernel.shape, 2, C, 4 * H)
        _expect_shape("recurrent_kernel", recurrent_kernel.shape, 2, H, 4 * H)
        if keep.shape[0] != 0:
            _expect_shape("keep", keep.shape, 2, B, T)
    cdef Py_ssize_t G = 4 * H
    cdef Py_ssize_t T_out = T if return_sequences else 1
    cdef const unsigned char* kp_p = &keep[0, 0] if keep.shape[0] != 0 else NULL
    cdef floating* dhrec_p = &dh_rec[0, 0]
    cdef floating* dcar_p = &dcarry[0, 0]
    # deterministic mode: one thread, so no gradient depends on the thread count
    cdef int n = 1 if _det() else _batch_threads(B, B * T * (C + H) * G)
    cdef int n_cols = n if n < G else <int>G
    cdef Py_ssize_t i, b0, nb
    cdef floating* dx_p = &dx[0, 0, 0]
    cdef floating* dh0_p = &dh0[0, 0]
    cdef floating* dc0_p = &dc0[0, 0]
    cdef floating* dg_p = &dgates[0, 0, 0]
    cdef floating* dgt_p = &dgates_t[0, 0]
    cdef floating* dk_p = &dkernel[0, 0]
    cdef floating* drk_p = &drecurrent_kernel[0, 0]
    cdef floating* db_p = &dbias[0]
    cdef const floating* dy_p = &dy[0, 0, 0]
    cdef const floating* dhn_p = &dh_n[0, 0]
    cdef const floating* dcn_p = &dc_n[0, 0]
    cdef const floating* htm1_p = &h_tm1_seq[0, 0, 0]
    cdef const floating* ctm1_p = &c_tm1_seq[0, 0, 0]
    cdef const floating* pa_p = &preact[0, 0, 0]
    cdef const floating* g_p = &gates[0, 0, 0]
    cdef const floating* x_p = &x[0, 0, 0]
    cdef const floating* k_p = &kernel[0, 0]
    cdef const floating* rk_p = &recurrent_kernel[0, 0]
    cdef int watched = _watch(B * T * (C + H) * G)
    cdef int was
    with nogil:
        if n == 1:
            _lstm_backward_rows(dx_p, dh0_p, dc0_p, dg_p, dgt_p, dhrec_p, dcar_p, dy_p, dhn_p, dcn_p,
                                ctm1_p, pa_p, g_p, kp_p, k_p, rk_p, B, T, C, H, activation,
                                recurrent_activation, go_backwards, return_sequences,
                                zero_output_for_mask)
            _weight_grads_cols(dk_p, drk_p, db_p, dg_p, x_p, htm1_p, B * T, C, H, G, 0, G)
        else:
            # the time loop: rows never interact, one row block per thread
            for i in prange(n, schedule='static', num_threads=n):
                was = _join_watch(watched)
                b0 = i * B // n
                nb = (i + 1) * B // n - b0
                _lstm_backward_rows(
                    dx_p + b0 * T * C, dh0_p + b0 * H, dc0_p + b0 * H, dg_p + b0 * T * G,
                    dgt_p + b0 * G, dhrec_p + b0 * H, dcar_p + b0 * H, dy_p + b0 * T_out * H,
                    dhn_p + b0 * H, dcn_p + b0 * H, ctm1_p + b0 * T * H, pa_p + b0 * T * G,
                    g_p + b0 * T * G, kp_p + b0 * T if kp_p != NULL else NULL, k_p, rk_p, nb, T,
                    C, H, activation, recurrent_activation, go_backwards, return_sequences,
                    zero_output_for_mask)
                _join_watch(was)
            # the weight gradients: one column block per thread, no two threads
            # adding into the same element
            for i in prange(n_cols, schedule='static', num_threads=n_cols):
                was = _join_watch(watched)
                _weight_grads_cols(dk_p, drk_p, db_p, dg_p, x_p, htm1_p, B * T, C, H, G,
                                   i * G // n_cols, (i + 1) * G // n_cols)
                _join_watch(was)
    _unwatch(watched)


def set_num_threads(int n):
    """Threads one call of this module's kernel may split its batch over.

    rnnengine.config.set_num_threads sets it for every kernel module. A call
    splits into row blocks of at least MIN_ROWS_PER_THREAD rows, and only from
    set_min_work_to_split multiply-adds (src/_gates.pxd); a build without OpenMP
    stays serial.
    """
    _set_gate_threads(n)


def get_num_threads():
    """Threads a call of this module's kernel may split its batch over."""
    return rnnengine_gate_threads


def _pointer_kernels():
    """(float32, float64) pointers to _lstm_forward as PyCapsules, for the fused
    call plans in rnnengine.kernels._cy_plan (src/_plan.pyx)."""
    # Typed through src/_call.pxd first: a signature that drifts fails to compile here.
    cdef lstm_f f32 = _lstm_forward[float]
    cdef lstm_d f64 = _lstm_forward[double]
    return (PyCapsule_New(<void*>f32, NULL, NULL), PyCapsule_New(<void*>f64, NULL, NULL))


def set_min_work_to_split(long long n):
    """Multiply-adds from which a call of this module splits its batch over threads
    (src/_gates.pxd); rnnengine.kernels._set_min_work_to_split sets every module's."""
    _set_min_work(n)


def get_min_work_to_split():
    return rnnengine_min_work


def set_split_thresholds(long long min_step, long long wake_work):
    """When a float32 call of at most 4 rows splits each step's units over two
    threads (src/_split.pxd): from min_step recurrent-kernel weights (H x 4H),
    and it wakes a sleeping helper from wake_work multiply-adds;
    rnnengine.kernels._set_split_thresholds sets every module's."""
    _set_split_thresholds(min_step, wake_work)


def get_split_thresholds():
    return rnnengine_split_min_step, rnnengine_split_wake_work


def split_chunks(Py_ssize_t B, Py_ssize_t T, Py_ssize_t H):
    """Chunks a float32 forward call of B rows, T steps and H units may be split
    into (1: the serial kernel), under this module's settings; for tests."""
    return _split_chunks(B, T, H, 4 * H)
