# cython: language_level=3
# SimpleRNN forward, forward-train and backward kernels in Cython, compiled into
# rnnengine.kernels._cy_simple_rnn: the twins of rnnengine/kernels/numba_simple_rnn.py.
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
# pass: no (B, T, H) projection is written and read back, and the tiled
# kernel reads the weights in place where sgemm would repack them every step.
# (A batch-1 split fuses each chunk's columns the same way: src/_split.pxd.)
# Otherwise (float64, or a build without the vector
# kernel) one GEMM projects every timestep (x viewed as (B*T, C)), then each
# step is one product h_tm1 @ recurrent_kernel (_recurrent_product) and the
# elementwise pass, as in the Numba kernel. Threads: _gates.pxd.
#
# Training: forward_train is the forward with the saved buffers filled (preact
# doubles as the projection scratch). The backward runs its time loop per row
# block, as the forward does: a step is one elementwise pass and one product
# dgates_t @ recurrent_kernel^T, and dx = dgates @ kernel^T follows for the
# block's rows. The weight gradients are sums over every (b, t), so they come
# after all blocks, as GEMMs with beta = 1 straight into the accumulators
# (Numba's dw scratch is not needed), split over threads by output columns so
# that no two threads add into the same element.
from cpython.pycapsule cimport PyCapsule_New

from _call cimport simple_rnn_d, simple_rnn_f
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy

from _blas cimport (NoTrans, Trans, _det, _fused_step, _gemm, _input_product, _join_watch, _load_det,
                   _load_interrupt, _recurrent_product, _step_product, _stopped, _unwatch, _watch)
from _gates cimport (RNNENGINE_BOUNDSCHECK, _batch_threads, _expect_shape,
                     _set_gate_threads, _set_min_work, activate_block, apply,
                     apply_grad_rows, save_preact, rnnengine_gate_threads, rnnengine_min_work)
from _mask cimport (_masked_dout, _row_runs, _run_end, _skip_row, _start_backward, _step_dout, _step_runs,
                   _take_valid_rows, _write_output)
from _split cimport (SPLIT_ZBUF, SplitCall, _cache_aligned, _chunk_scratch, _load_pool,
                     _pool_acquire, _pool_release, _set_split_thresholds, _split_call,
                     _split_chunks, _split_output, _split_step, rnnengine_split_min_step,
                     rnnengine_split_wake_work)

_load_pool()
_load_det()
_load_interrupt()


cdef inline void _simple_rnn_row(floating* h_b, const floating* xproj_bt,
                                 floating* rec_b, const floating* bias,
                                 Py_ssize_t H, int activation) noexcept nogil:
    # h_b, xproj_bt, rec_b and bias are (H,): one batch row of one step; rec_b
    # is scratch, overwritten with the pre-activation. xproj_bt NULL: rec_b
    # already holds the whole pre-activation (x_t, h and bias).
    cdef Py_ssize_t j
    if xproj_bt != NULL:
        for j in range(H):
            rec_b[j] += xproj_bt[j] + bias[j]
    activate_block(rec_b, H, activation)
    memcpy(h_b, rec_b, H * sizeof(floating))


cdef void _simple_rnn_chunk(void* ctx, int stage, int chunk) noexcept nogil:
    # One ticket of a split call (src/_split.pxd): this chunk's units of a step.
    cdef SplitCall* a = <SplitCall*>ctx
    cdef Py_ssize_t u0, n, s, t, b
    cdef float zbuf[SPLIT_ZBUF]
    cdef float* z = _cache_aligned(zbuf)  # (B, n): this chunk's own
    if not _split_step(a, z, stage, chunk, &u0, &n, &s, &t):
        return
    for b in range(a.B):
        _simple_rnn_row(a.hs[1 - s % 2] + b * a.Hp + u0,
                        a.xproj + (b * a.T + t) * a.H + u0 if a.xproj != NULL else NULL,
                        z + b * n, a.bias + u0, n, a.activation)
    _split_output(a, a.hs[1 - s % 2], s, u0, n)


cdef void _simple_rnn_forward(floating* y_out, floating* h, floating* xproj,
                              floating* rec, const floating* x, const unsigned char* keep,
                              const floating* kernel,
                              const floating* recurrent_kernel,
                              const floating* bias, Py_ssize_t B, Py_ssize_t T,
                              Py_ssize_t C, Py_ssize_t H, int activation,
                              bint go_backwards, bint return_sequences,
                              bint zero_output_for_mask) noexcept nogil:
    # y_out is (B, T or 1, H); h is (B, H), initial state in, final state out;
    # xproj is (B, T, H); rec is (B, H); x is (B, T, C); keep is (B, T) or NULL
    # (src/_mask.pxd); kernel is (C, H); recurrent_kernel is (H, H); bias is (H,)
    cdef Py_ssize_t s, t, b, s1
    if keep != NULL and B == 1:  # the valid runs, each an unmasked call (_mask.pxd)
        s = 0
        while s < T:
            t = T - 1 - s if go_backwards else s
            if keep[t]:
                s1 = _run_end(keep, T, go_backwards, s)
                _simple_rnn_forward(y_out + s * H if return_sequences else y_out, h, xproj, rec,
                                    x + (T - s1 if go_backwards else s) * C, NULL, kernel,
                                    recurrent_kernel, bias, 1, s1 - s, C, H, activation,
                                    go_backwards, return_sequences, 0)
                s = s1  # (a run that ends the sequence wrote the last output itself)
            else:
                _write_output(y_out, h, keep, 1, T, H, s, t, return_sequences, zero_output_for_mask)
                s += 1
        return
    # float32: one tiled pass a step (as in _lstm.pyx).
    cdef bint fused = _fused_step(x, B)
    cdef int chunks = _split_chunks(B, T, H, H) if keep == NULL else 1
    cdef int pooled = -1  # _pool_acquire's answer: 1 split, 0 or 2 alone
    if floating is float:
        if chunks > 1:
            pooled = _pool_acquire(_simple_rnn_chunk, H, B, T, chunks,
                                   _chunk_scratch(recurrent_kernel, H, 1, chunks),
                                   B * T * (C + H) * H)
            if pooled == 1:
                _split_call(_simple_rnn_chunk, y_out, h, NULL, NULL if fused else xproj, x, kernel,
                            recurrent_kernel, bias, NULL, B, T, C, H, 1, activation, activation,
                            go_backwards, return_sequences, chunks)
                _pool_release(1)
                return
    if floating is float and chunks > 1 and not fused:  # may split, runs alone: the split's bits
        _recurrent_product(xproj, x, kernel, <int>(B * T), <int>C, <int>H, <int>H, <int>H)
    elif not fused:
        # xproj.reshape(B * T, H)[:] = x.reshape(B * T, C) @ kernel
        _input_product(xproj, x, kernel, B * T, C, H)
    for s in range(T):
        if _stopped():  # SIGINT: the driver raises KeyboardInterrupt
            break
        t = T - 1 - s if go_backwards else s
        if not _step_runs(keep, B, T, t):
            pass
        elif fused:
            _step_product(rec, h, x, kernel, recurrent_kernel, bias, B, T, C, H, H, t)
            for b in range(B):
                if _row_runs(keep, T, b, t):  # a masked row carries its state through
                    _simple_rnn_row(h + b * H, NULL, rec + b * H, bias, H, activation)
        else:
            # rec[:] = h_tm1 @ recurrent_kernel
            _recurrent_product(rec, h, recurrent_kernel, <int>B, <int>H, <int>H, <int>H, <int>H)
            for b in range(B):
                if _row_runs(keep, T, b, t):
                    _simple_rnn_row(h + b * H, xproj + (b * T + t) * H, rec + b * H,
                                    bias, H, activation)
        # y_out[:, s] = h (every step), or y_out[:, 0] = h (last step only)
        _write_output(y_out, h, keep, B, T, H, s, t, return_sequences, zero_output_for_mask)
    if pooled >= 0:
        _pool_release(pooled)


def simple_rnn_forward(floating[:, :, ::1] y_out,  # OUT
                       floating[:, ::1] h,  # IN/OUT
                       floating[:, :, ::1] xproj,  # SCRATCH
                       floating[:, ::1] rec,  # SCRATCH
                       const floating[:, :, ::1] x,  # IN
                       const unsigned char[:, ::1] keep,  # IN: (B, T), or empty for no mask
                       const floating[:, ::1] kernel,  # IN
                       const floating[:, ::1] recurrent_kernel,  # IN
                       const floating[::1] bias,  # IN
                       Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                       int activation, bint go_backwards, bint return_sequences,
                       bint zero_output_for_mask):
    """SimpleRNN forward over a whole sequence; see rnnengine/kernels/__init__.py."""
    if RNNENGINE_BOUNDSCHECK:
        _expect_shape("y_out", y_out.shape, 3, B, T if return_sequences else 1, H)
        _expect_shape("h", h.shape, 2, B, H)
        _expect_shape("xproj", xproj.shape, 3, B, T, H)
        _expect_shape("rec", rec.shape, 2, B, H)
        _expect_shape("x", x.shape, 3, B, T, C)
        _expect_shape("kernel", kernel.shape, 2, C, H)
        _expect_shape("recurrent_kernel", recurrent_kernel.shape, 2, H, H)
        _expect_shape("bias", bias.shape, 1, H)
        if keep.shape[0] != 0:
            _expect_shape("keep", keep.shape, 2, B, T)
    # Split the batch into n contiguous row blocks, one per thread, each running
    # the whole sequence: rows never interact (see _batch_threads in _gates.pxd).
    cdef Py_ssize_t T_out = T if return_sequences else 1
    cdef int n = _batch_threads(B, B * T * (C + H) * H)
    cdef Py_ssize_t i, b0, nb
    cdef floating* y_p = &y_out[0, 0, 0]
    cdef floating* h_p = &h[0, 0]
    cdef floating* xp_p = &xproj[0, 0, 0]
    cdef floating* rec_p = &rec[0, 0]
    cdef const floating* x_p = &x[0, 0, 0]
    cdef const unsigned char* k_p = &keep[0, 0] if keep.shape[0] != 0 else NULL
    cdef int watched = _watch(B * T * (C + H) * H)
    cdef int was
    with nogil:
        if n == 1:
            _simple_rnn_forward(y_p, h_p, xp_p, rec_p, x_p, k_p, &kernel[0, 0], &recurrent_kernel[0, 0],
                                &bias[0], B, T, C, H, activation, go_backwards, return_sequences,
                                zero_output_for_mask)
        else:
            for i in prange(n, schedule='static', num_threads=n):
                was = _join_watch(watched)
                b0 = i * B // n
                nb = (i + 1) * B // n - b0
                _simple_rnn_forward(y_p + b0 * T_out * H, h_p + b0 * H, xp_p + b0 * T * H, rec_p + b0 * H,
                                    x_p + b0 * T * C, k_p + b0 * T if k_p != NULL else NULL,
                                    &kernel[0, 0], &recurrent_kernel[0, 0], &bias[0], nb, T, C, H,
                                    activation, go_backwards, return_sequences, zero_output_for_mask)
                _join_watch(was)
    _unwatch(watched)


# -- training -----------------------------------------------------------------------------

cdef void _simple_rnn_forward_train(floating* y_out, floating* h, floating* h_tm1_seq,
                                    floating* preact, floating* gates, floating* rec,
                                    const floating* x, const unsigned char* keep,
                                    const floating* kernel,
                                    const floating* recurrent_kernel,
                                    const floating* bias, Py_ssize_t B, Py_ssize_t T,
                                    Py_ssize_t C, Py_ssize_t H, int activation,
                                    bint go_backwards, bint return_sequences,
                                    bint zero_output_for_mask) noexcept nogil:
    # y_out is (B, T or 1, H); h is (B, H), initial state in, final state out;
    # h_tm1_seq, preact and gates are (B, T, H), saved at the input time t;
    # rec is (B, H) scratch; x is (B, T, C); keep is (B, T) or NULL
    # (src/_mask.pxd); kernel is (C, H); recurrent_kernel is (H, H); bias is (H,)
    cdef Py_ssize_t s, t, b, j, bt
    cdef floating* z
    cdef floating* pa
    # The pre-activations as _simple_rnn_forward computes them (bit for bit):
    # fused, each step's one tiled pass; otherwise preact.reshape(B * T, H)[:]
    # = x.reshape(B * T, C) @ kernel, and each step adds bias + rec in place.
    cdef bint fused = _fused_step(x, B)
    if not fused:
        _input_product(preact, x, kernel, B * T, C, H)
    for s in range(T):
        if _stopped():  # SIGINT: the driver raises KeyboardInterrupt
            break
        t = T - 1 - s if go_backwards else s
        if not _step_runs(keep, B, T, t):
            pass
        elif fused:
            _step_product(rec, h, x, kernel, recurrent_kernel, bias, B, T, C, H, H, t)
        else:
            # rec[:] = h_tm1 @ recurrent_kernel
            _recurrent_product(rec, h, recurrent_kernel, <int>B, <int>H, <int>H, <int>H, <int>H)
        for b in range(B):
            bt = (b * T + t) * H
            if not _row_runs(keep, T, b, t):  # a masked row carries its state through
                _skip_row(h_tm1_seq + bt, h + b * H, preact + bt, gates + bt, H, H)
                continue
            z = rec + b * H
            pa = preact + bt
            memcpy(h_tm1_seq + bt, h + b * H, H * sizeof(floating))
            save_preact(z, pa, bias, H, fused)
            activate_block(z, H, activation)
            memcpy(gates + bt, z, H * sizeof(floating))
            memcpy(h + b * H, z, H * sizeof(floating))
        # y_out[:, s] = h (every step), or y_out[:, 0] = h (last step only); masked: _mask.pxd
        _write_output(y_out, h, keep, B, T, H, s, t, return_sequences, zero_output_for_mask)


cdef void _simple_rnn_backward_rows(floating* dx, floating* dh0, floating* dgates,
                                    floating* dgates_t, floating* dh_rec, floating* dcarry,
                                    const floating* dy,
                                    const floating* dh_n, const floating* preact,
                                    const floating* gates, const unsigned char* keep,
                                    const floating* kernel,
                                    const floating* recurrent_kernel, Py_ssize_t B,
                                    Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                                    int activation, bint go_backwards,
                                    bint return_sequences,
                                    bint zero_output_for_mask) noexcept nogil:
    # The per-row part of the backward for B rows: dx (B, T, C) and dh0 (B, H)
    # written, dh0 carrying the running dh_t; dgates (B, T, H) the activation's
    # derivative, then the gradient w.r.t. preact; dgates_t (B, H) scratch;
    # dh_rec and dcarry (B, H) scratch with a mask (keep (B, T), or NULL:
    # src/_mask.pxd); dy (B, T or 1, H); dh_n (B, H), may alias dh0; preact,
    # gates (B, T, H).
    cdef Py_ssize_t T_out = T if return_sequences else 1
    cdef Py_ssize_t s, t, b, j
    cdef floating dv
    cdef floating* dh
    cdef floating* dg
    cdef floating* dgt
    cdef const floating* dyb
    # dgates starts as the activation's derivative, d(h_bt)/dv, for every (b, t).
    apply_grad_rows(dgates, preact, gates, B * T, H, 0, H, activation)
    _start_backward(dh0, dcarry, dy, dh_n, keep, B, H, return_sequences)
    for s in range(T - 1, -1, -1):
        if _stopped():  # SIGINT: the driver raises KeyboardInterrupt
            break
        t = T - 1 - s if go_backwards else s
        for b in range(B):
            dh = dh0 + b * H
            dg = dgates + (b * T + t) * H
            dgt = dgates_t + b * H
            dyb = dy + (b * T_out + (s if return_sequences else 0)) * H
            if keep != NULL:
                if not keep[b * T + t]:
                    _masked_dout(dcarry + b * H, dgt, dg, dyb, H, H, return_sequences,
                                 zero_output_for_mask)
                    continue
                _step_dout(dh, dcarry + b * H, dyb, H, return_sequences)
            elif return_sequences:
                for j in range(H):
                    dh[j] += dyb[j]
            for j in range(H):
                # forward: h_bt = apply(activation, v)
                dv = dh[j] * dg[j]
                dgt[j] = dv
                dg[j] = dv
        if keep != NULL and not _step_runs(keep, B, T, t):
            continue  # no row ran step t: every dh passes on unchanged, no product
        # forward: rec = h_tm1 @ recurrent_kernel, so dh_tm1 = dv @ recurrent_kernel^T
        # (a masked row's dh_t passes to the step before unchanged)
        _gemm(NoTrans, Trans, <int>B, <int>H, <int>H, 1, dgates_t, <int>H,
              recurrent_kernel, <int>H, 0, dh0 if keep == NULL else dh_rec, <int>H)
        if keep != NULL:
            _take_valid_rows(dh0, dh_rec, keep, B, T, H, t, False)
    # forward: preact = x @ kernel + ..., so dx = dgates @ kernel^T
    _gemm(NoTrans, Trans, <int>(B * T), <int>C, <int>H, 1, dgates, <int>H,
          kernel, <int>H, 0, dx, <int>C)


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


def simple_rnn_forward_train(floating[:, :, ::1] y_out,  # OUT
                             floating[:, ::1] h,  # IN/OUT
                             floating[:, :, ::1] h_tm1_seq,  # OUT (saved)
                             floating[:, :, ::1] preact,  # OUT (saved)
                             floating[:, :, ::1] gates,  # OUT (saved)
                             floating[:, ::1] rec,  # SCRATCH
                             const floating[:, :, ::1] x,  # IN
                             const unsigned char[:, ::1] keep,  # IN: (B, T), or empty for no mask
                             const floating[:, ::1] kernel,  # IN
                             const floating[:, ::1] recurrent_kernel,  # IN
                             const floating[::1] bias,  # IN
                             Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                             int activation, bint go_backwards, bint return_sequences,
                             bint zero_output_for_mask):
    """SimpleRNN forward that saves what the backward reads; see rnnengine/kernels/__init__.py."""
    if RNNENGINE_BOUNDSCHECK:
        _expect_shape("y_out", y_out.shape, 3, B, T if return_sequences else 1, H)
        _expect_shape("h", h.shape, 2, B, H)
        _expect_shape("h_tm1_seq", h_tm1_seq.shape, 3, B, T, H)
        _expect_shape("preact", preact.shape, 3, B, T, H)
        _expect_shape("gates", gates.shape, 3, B, T, H)
        _expect_shape("rec", rec.shape, 2, B, H)
        _expect_shape("x", x.shape, 3, B, T, C)
        _expect_shape("kernel", kernel.shape, 2, C, H)
        _expect_shape("recurrent_kernel", recurrent_kernel.shape, 2, H, H)
        _expect_shape("bias", bias.shape, 1, H)
        if keep.shape[0] != 0:
            _expect_shape("keep", keep.shape, 2, B, T)
    cdef Py_ssize_t T_out = T if return_sequences else 1
    cdef int n = _batch_threads(B, B * T * (C + H) * H)
    cdef Py_ssize_t i, b0, nb
    cdef const unsigned char* k_p = &keep[0, 0] if keep.shape[0] != 0 else NULL
    cdef floating* y_p = &y_out[0, 0, 0]
    cdef floating* h_p = &h[0, 0]
    cdef floating* htm1_p = &h_tm1_seq[0, 0, 0]
    cdef floating* pa_p = &preact[0, 0, 0]
    cdef floating* g_p = &gates[0, 0, 0]
    cdef floating* rec_p = &rec[0, 0]
    cdef const floating* x_p = &x[0, 0, 0]
    cdef int watched = _watch(B * T * (C + H) * H)
    cdef int was
    with nogil:
        if n == 1:
            _simple_rnn_forward_train(y_p, h_p, htm1_p, pa_p, g_p, rec_p, x_p, k_p, &kernel[0, 0],
                                      &recurrent_kernel[0, 0], &bias[0], B, T, C, H,
                                      activation, go_backwards, return_sequences,
                                      zero_output_for_mask)
        else:
            # rows never interact: one contiguous row block per thread
            for i in prange(n, schedule='static', num_threads=n):
                was = _join_watch(watched)
                b0 = i * B // n
                nb = (i + 1) * B // n - b0
                _simple_rnn_forward_train(
                    y_p + b0 * T_out * H, h_p + b0 * H, htm1_p + b0 * T * H, pa_p + b0 * T * H,
                    g_p + b0 * T * H, rec_p + b0 * H, x_p + b0 * T * C,
                    k_p + b0 * T if k_p != NULL else NULL, &kernel[0, 0],
                    &recurrent_kernel[0, 0], &bias[0], nb, T, C, H, activation, go_backwards,
                    return_sequences, zero_output_for_mask)
                _join_watch(was)
    _unwatch(watched)


def simple_rnn_backward(floating[:, :, ::1] dx,  # OUT
                        floating[:, ::1] dh0,  # OUT
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
                        const floating[:, :, ::1] h_tm1_seq,  # IN (saved)
                        const floating[:, :, ::1] preact,  # IN (saved)
                        const floating[:, :, ::1] gates,  # IN (saved)
                        const floating[:, :, ::1] x,  # IN
                        const unsigned char[:, ::1] keep,  # IN: (B, T), or empty for no mask
                        const floating[:, ::1] kernel,  # IN
                        const floating[:, ::1] recurrent_kernel,  # IN
                        Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                        int activation, bint go_backwards, bint return_sequences,
                        bint zero_output_for_mask):
    """SimpleRNN backward over a whole sequence; see rnnengine/kernels/__init__.py."""
    if RNNENGINE_BOUNDSCHECK:
        _expect_shape("dx", dx.shape, 3, B, T, C)
        _expect_shape("dh0", dh0.shape, 2, B, H)
        _expect_shape("dkernel", dkernel.shape, 2, C, H)
        _expect_shape("drecurrent_kernel", drecurrent_kernel.shape, 2, H, H)
        _expect_shape("dbias", dbias.shape, 1, H)
        _expect_shape("dgates", dgates.shape, 3, B, T, H)
        _expect_shape("dgates_t", dgates_t.shape, 2, B, H)
        _expect_shape("dh_rec", dh_rec.shape, 2, B, H)
        _expect_shape("dcarry", dcarry.shape, 2, B, H)
        _expect_shape("dw", dw.shape, 1, max(C, H) * H)
        _expect_shape("dy", dy.shape, 3, B, T if return_sequences else 1, H)
        _expect_shape("dh_n", dh_n.shape, 2, B, H)
        _expect_shape("h_tm1_seq", h_tm1_seq.shape, 3, B, T, H)
        _expect_shape("preact", preact.shape, 3, B, T, H)
        _expect_shape("gates", gates.shape, 3, B, T, H)
        _expect_shape("x", x.shape, 3, B, T, C)
        _expect_shape("kernel", kernel.shape, 2, C, H)
        _expect_shape("recurrent_kernel", recurrent_kernel.shape, 2, H, H)
        if keep.shape[0] != 0:
            _expect_shape("keep", keep.shape, 2, B, T)
    cdef Py_ssize_t T_out = T if return_sequences else 1
    cdef const unsigned char* k_p = &keep[0, 0] if keep.shape[0] != 0 else NULL
    cdef floating* dhrec_p = &dh_rec[0, 0]
    cdef floating* dcar_p = &dcarry[0, 0]
    # deterministic mode: one thread, so no gradient depends on the thread count
    cdef int n = 1 if _det() else _batch_threads(B, B * T * (C + H) * H)
    cdef int n_cols = n if n < H else <int>H
    cdef Py_ssize_t i, b0, nb
    cdef floating* dx_p = &dx[0, 0, 0]
    cdef floating* dh0_p = &dh0[0, 0]
    cdef floating* dg_p = &dgates[0, 0, 0]
    cdef floating* dgt_p = &dgates_t[0, 0]
    cdef const floating* dy_p = &dy[0, 0, 0]
    cdef const floating* dhn_p = &dh_n[0, 0]
    cdef const floating* pa_p = &preact[0, 0, 0]
    cdef const floating* g_p = &gates[0, 0, 0]
    cdef floating* dk_p = &dkernel[0, 0]
    cdef floating* drk_p = &drecurrent_kernel[0, 0]
    cdef floating* db_p = &dbias[0]
    cdef const floating* x_p = &x[0, 0, 0]
    cdef const floating* htm1_p = &h_tm1_seq[0, 0, 0]
    cdef int watched = _watch(B * T * (C + H) * H)
    cdef int was
    with nogil:
        if n == 1:
            _simple_rnn_backward_rows(dx_p, dh0_p, dg_p, dgt_p, dhrec_p, dcar_p, dy_p, dhn_p, pa_p, g_p,
                                      k_p, &kernel[0, 0], &recurrent_kernel[0, 0], B, T, C, H,
                                      activation, go_backwards, return_sequences,
                                      zero_output_for_mask)
            _weight_grads_cols(dk_p, drk_p, db_p, dg_p, x_p, htm1_p, B * T, C, H, H, 0, H)
        else:
            # the time loop: rows never interact, one row block per thread
            for i in prange(n, schedule='static', num_threads=n):
                was = _join_watch(watched)
                b0 = i * B // n
                nb = (i + 1) * B // n - b0
                _simple_rnn_backward_rows(
                    dx_p + b0 * T * C, dh0_p + b0 * H, dg_p + b0 * T * H, dgt_p + b0 * H,
                    dhrec_p + b0 * H, dcar_p + b0 * H,
                    dy_p + b0 * T_out * H, dhn_p + b0 * H, pa_p + b0 * T * H, g_p + b0 * T * H,
                    k_p + b0 * T if k_p != NULL else NULL,
                    &kernel[0, 0], &recurrent_kernel[0, 0], nb, T, C, H, activation,
                    go_backwards, return_sequences, zero_output_for_mask)
                _join_watch(was)
            # the weight gradients: one column block per thread, no two threads
            # adding into the same element
            for i in prange(n_cols, schedule='static', num_threads=n_cols):
                was = _join_watch(watched)
                _weight_grads_cols(dk_p, drk_p, db_p, dg_p, x_p, htm1_p, B * T, C, H, H,
                                   i * H // n_cols, (i + 1) * H // n_cols)
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
    """(float32, float64) pointers to _simple_rnn_forward as PyCapsules, for the fused
    call plans in rnnengine.kernels._cy_plan (src/_plan.pyx)."""
    # Typed through src/_call.pxd first: a signature that drifts fails to compile here.
    cdef simple_rnn_f f32 = _simple_rnn_forward[float]
    cdef simple_rnn_d f64 = _simple_rnn_forward[double]
    return (PyCapsule_New(<void*>f32, NULL, NULL), PyCapsule_New(<void*>f64, NULL, NULL))


def set_min_work_to_split(long long n):
    """Multiply-adds from which a call of this module splits its batch over threads
    (src/_gates.pxd); rnnengine.kernels._set_min_work_to_split sets every module's."""
    _set_min_work(n)


def get_min_work_to_split():
    return rnnengine_min_work


def set_split_thresholds(long long min_step, long long wake_work):
    """When a float32 call of at most 4 rows splits each step's units over two
    threads (src/_split.pxd): from min_step recurrent-kernel weights (H x H),
    and it wakes a sleeping helper from wake_work multiply-adds;
    rnnengine.kernels._set_split_thresholds sets every module's."""
    _set_split_thresholds(min_step, wake_work)


def get_split_thresholds():
    return rnnengine_split_min_step, rnnengine_split_wake_work


def split_chunks(Py_ssize_t B, Py_ssize_t T, Py_ssize_t H):
    """Chunks a float32 forward call of B rows, T steps and H units may be split
    into (1: the serial kernel), under this module's settings; for tests."""
    return _split_chunks(B, T, H, H)
