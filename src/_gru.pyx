# cython: language_level=3
# GRU forward, forward-train and backward kernels in Cython (both reset_after
# variants), compiled into rnnengine.kernels._cy_gru: the twins of
# rnnengine/kernels/numba_gru.py.
#
# Contract: rnnengine/kernels/__init__.py (argument order, shapes, semantics).
# float32 or float64 through the fused `floating` type; every buffer
# C-contiguous; weights and x may be read-only. The def entry turns memoryviews
# into pointers and releases the GIL; the work is in the `noexcept nogil`
# pointer kernel, which never allocates and never raises.
#
# Design: one GEMM projects every timestep (x viewed as (B*T, C)). With
# reset_after (Keras 3's default) each step is one GEMM h_tm1 @ recurrent_kernel
# and one fused elementwise pass. Without it the reset gate applies before the
# product, so a step is two GEMMs: h_tm1 @ recurrent_kernel[:, :2H] for z and r
# (leading dimension 3H: the (H, 2H) block is read in place, and rec[:, 2H:] is
# neither computed nor read), then (r * h_tm1) @ recurrent_kernel_h. The
# elementwise passes run on OpenMP threads over the batch only after
# set_num_threads(n > 1), and from PARALLEL_MIN_BH elements a step (why:
# _gates.pxd).
#
# Training: forward_train is the forward with the saved buffers filled (preact
# doubles as the projection scratch). The backward runs its time loop per row
# block, as the forward does. With reset_after a step is one elementwise pass
# and one product dh_tm1 += dgates_t @ recurrent_kernel^T; without it, da_r
# needs d(rh) = da_h @ recurrent_kernel_h^T first, and the second product
# reads only the z and r blocks (dgates_t[:, :2H] @ recurrent_kernel[:, :2H]^T).
# dx = dgates @ kernel^T follows for the block's rows. The weight gradients
# are sums over every (b, t), so they come after all blocks, as GEMMs with
# beta = 1 straight into the accumulators (Numba's dw scratch is not needed),
# split over threads by output columns so that no two threads add into the
# same element.
from cpython.pycapsule cimport PyCapsule_New

from _call cimport gru_d, gru_f
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy, memset

from _blas cimport (NoTrans, Trans, _det, _gemm, _input_product, _join_watch, _load_det, _load_interrupt,
                   _recurrent_product, _stopped, _unwatch, _watch)
from _gates cimport (RNNENGINE_BOUNDSCHECK, _batch_threads, _expect_shape,
                     _set_gate_threads, _set_min_work, activate_block, apply,
                     apply_grad_rows, rnnengine_gate_threads, rnnengine_min_work)
from _mask cimport (_masked_dout, _row_runs, _run_end, _skip_row, _start_backward, _step_dout, _step_runs,
                   _take_valid_rows, _write_output)
from _split cimport (SPLIT_ZBUF, SplitCall, _cache_aligned, _chunk_scratch, _load_pool,
                     _pool_acquire, _pool_release, _set_split_thresholds, _split_call,
                     _split_chunks, _split_output, _split_step, rnnengine_split_min_step,
                     rnnengine_split_wake_work)

_load_pool()
_load_det()
_load_interrupt()


cdef inline void _gru_units_reset_after(floating* h_out, const floating* h_tm1,
                                        const floating* xproj_bt, floating* z,
                                        const floating* input_bias,
                                        const floating* recurrent_bias, Py_ssize_t n,
                                        Py_ssize_t H, Py_ssize_t zs, int activation,
                                        int recurrent_activation) noexcept nogil:
    # n units of one batch row: h_tm1 and h_out (which may be the same) are
    # (n,); xproj_bt and both biases point at the first unit's z column, the r
    # and h columns H, 2H further; z (h_tm1 @ U for these columns: scratch,
    # overwritten with the gates) likewise with blocks zs apart.
    cdef Py_ssize_t j
    for j in range(n):
        z[j] += xproj_bt[j] + input_bias[j] + recurrent_bias[j]
        z[zs + j] += xproj_bt[H + j] + input_bias[H + j] + recurrent_bias[H + j]
    activate_block(z, n, recurrent_activation)  # z
    activate_block(z + zs, n, recurrent_activation)  # r
    # hh = act(x_h + r * (h_tm1 @ U_h + b_rec_h))
    for j in range(n):
        z[2 * zs + j] = (xproj_bt[2 * H + j] + input_bias[2 * H + j]
                         + z[zs + j] * (z[2 * zs + j] + recurrent_bias[2 * H + j]))
    activate_block(z + 2 * zs, n, activation)
    for j in range(n):
        h_out[j] = z[j] * h_tm1[j] + (1 - z[j]) * z[2 * zs + j]


cdef inline void _gru_row_reset_after(floating* h_b, const floating* xproj_bt,
                                      floating* z,
                                      const floating* input_bias,
                                      const floating* recurrent_bias, Py_ssize_t H,
                                      int activation,
                                      int recurrent_activation) noexcept nogil:
    # h_b is (H,); xproj_bt, z (this row of rec) and both biases are (3H,).
    _gru_units_reset_after(h_b, h_b, xproj_bt, z, input_bias, recurrent_bias, H, H, H,
                           activation, recurrent_activation)


cdef void _gru_chunk(void* ctx, int stage, int chunk) noexcept nogil:
    # One ticket of a split call (src/_split.pxd), reset_after=True only: this
    # chunk's units of a step.
    cdef SplitCall* a = <SplitCall*>ctx
    cdef Py_ssize_t u0, n, s, t, b
    cdef float zbuf[SPLIT_ZBUF]
    cdef float* z = _cache_aligned(zbuf)  # (B, 3, n): this chunk's own
    if not _split_step(a, z, stage, chunk, &u0, &n, &s, &t):
        return
    for b in range(a.B):
        _gru_units_reset_after(a.hs[1 - s % 2] + b * a.Hp + u0, a.hs[s % 2] + b * a.Hp + u0,
                               a.xproj + (b * a.T + t) * a.G + u0, z + b * 3 * n,
                               a.bias + u0, a.recurrent_bias + u0, n, a.H, n,
                               a.activation, a.recurrent_activation)
    _split_output(a, a.hs[1 - s % 2], s, u0, n)


cdef inline void _gru_row_reset(floating* rh_b, const floating* h_b,
                                const floating* xproj_bt, floating* z,
                                const floating* input_bias, Py_ssize_t H,
                                int recurrent_activation) noexcept nogil:
    # rh_b and h_b are (H,); xproj_bt, z (this row of rec, scratch) and
    # input_bias are (3H,). z[:2H] becomes the gates z, r; rh = r * h_tm1 is the
    # left operand of the second product.
    cdef Py_ssize_t j
    for j in range(2 * H):
        z[j] += xproj_bt[j] + input_bias[j]
    activate_block(z, 2 * H, recurrent_activation)
    for j in range(H):
        rh_b[j] = z[H + j] * h_b[j]


cdef inline void _gru_row_reset_before(floating* h_b, const floating* xproj_bt,
                                       const floating* z,
                                       floating* hh,
                                       const floating* input_bias, Py_ssize_t H,
                                       int activation) noexcept nogil:
    # h_b and hh (this row of rec_h: scratch) are (H,); xproj_bt, z (gates from
    # _gru_row_reset) and input_bias are (3H,).
    # hh = act(x_h + (r * h_tm1) @ U_h)
    cdef Py_ssize_t j
    for j in range(H):
        hh[j] += xproj_bt[2 * H + j] + input_bias[2 * H + j]
    activate_block(hh, H, activation)
    for j in range(H):
        h_b[j] = z[j] * h_b[j] + (1 - z[j]) * hh[j]


cdef void _gru_forward(floating* y_out, floating* h, floating* xproj, floating* rec,
                       floating* rec_h, floating* rh, const floating* x,
                       const unsigned char* keep,
                       const floating* kernel, const floating* recurrent_kernel,
                       const floating* recurrent_kernel_h,
                       const floating* input_bias, const floating* recurrent_bias,
                       Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                       int activation, int recurrent_activation, bint go_backwards,
                       bint return_sequences, bint reset_after,
                       bint zero_output_for_mask) noexcept nogil:
    # y_out is (B, T or 1, H); h is (B, H), initial state in, final state out;
    # xproj is (B, T, 3H); rec is (B, 3H); rec_h and rh are (B, H); x is (B, T, C);
    # keep is (B, T) or NULL (src/_mask.pxd);
    # kernel is (C, 3H); recurrent_kernel is (H, 3H); recurrent_kernel_h is its
    # last block (H, H), contiguous; input_bias and recurrent_bias are (3H,).
    cdef Py_ssize_t K = 3 * H
    cdef Py_ssize_t s, t, b, s1
    if keep != NULL and B == 1:  # the valid runs, each an unmasked call (_mask.pxd)
        s = 0
        while s < T:
            t = T - 1 - s if go_backwards else s
            if keep[t]:
                s1 = _run_end(keep, T, go_backwards, s)
                _gru_forward(y_out + s * H if return_sequences else y_out, h, xproj, rec, rec_h, rh,
                             x + (T - s1 if go_backwards else s) * C, NULL, kernel, recurrent_kernel,
                             recurrent_kernel_h, input_bias, recurrent_bias, 1, s1 - s, C, H,
                             activation, recurrent_activation, go_backwards, return_sequences,
                             reset_after, 0)
                s = s1  # (a run that ends the sequence wrote the last output itself)
            else:
                _write_output(y_out, h, keep, 1, T, H, s, t, return_sequences, zero_output_for_mask)
                s += 1
        return
    cdef int chunks = _split_chunks(B, T, H, K) if reset_after and keep == NULL else 1
    cdef int pooled = -1  # _pool_acquire's answer: 1 split, 0 or 2 alone
    if floating is float:
        if chunks > 1:
            pooled = _pool_acquire(_gru_chunk, H, B, T, chunks,
                                   _chunk_scratch(recurrent_kernel, H, 3, chunks),
                                   B * T * (C + H) * K)
            if pooled == 1:
                _split_call(_gru_chunk, y_out, h, NULL, xproj, x, kernel, recurrent_kernel,
                            input_bias, recurrent_bias, B, T, C, H, 3, activation,
                            recurrent_activation, go_backwards, return_sequences, chunks)
                _pool_release(1)
                return
    # xproj.reshape(B * T, 3H)[:] = x.reshape(B * T, C) @ kernel
    if floating is float and chunks > 1:  # may split, runs alone: the split's bits
        _recurrent_product(xproj, x, kernel, <int>(B * T), <int>C, <int>K, <int>K, <int>K)
    else:
        _input_product(xproj, x, kernel, B * T, C, K)
    for s in range(T):
        if _stopped():  # SIGINT: the driver raises KeyboardInterrupt
            break
        t = T - 1 - s if go_backwards else s
        if not _step_runs(keep, B, T, t):
            pass
        elif reset_after:
            # rec[:] = h_tm1 @ recurrent_kernel
            _recurrent_product(rec, h, recurrent_kernel, <int>B, <int>H, <int>K, <int>K, <int>K)
            for b in range(B):
                if _row_runs(keep, T, b, t):  # a masked row carries its state through
                    _gru_row_reset_after(h + b * H, xproj + (b * T + t) * K,
                                         rec + b * K, input_bias, recurrent_bias, H,
                                         activation, recurrent_activation)
        else:
            # rec[:, :2H] = h_tm1 @ recurrent_kernel[:, :2H]
            _recurrent_product(rec, h, recurrent_kernel, <int>B, <int>H, <int>(2 * H), <int>K, <int>K)
            for b in range(B):
                _gru_row_reset(rh + b * H, h + b * H, xproj + (b * T + t) * K,
                               rec + b * K, input_bias, H, recurrent_activation)
            # rec_h[:] = rh @ recurrent_kernel_h
            _recurrent_product(rec_h, rh, recurrent_kernel_h, <int>B, <int>H, <int>H, <int>H, <int>H)
            for b in range(B):
                if _row_runs(keep, T, b, t):
                    _gru_row_reset_before(h + b * H, xproj + (b * T + t) * K,
                                          rec + b * K, rec_h + b * H, input_bias, H,
                                          activation)
        # y_out[:, s] = h (every step), or y_out[:, 0] = h (last step only)
        _write_output(y_out, h, keep, B, T, H, s, t, return_sequences, zero_output_for_mask)
    if pooled >= 0:
        _pool_release(pooled)


def gru_forward(floating[:, :, ::1] y_out,  # OUT
                floating[:, ::1] h,  # IN/OUT
                floating[:, :, ::1] xproj,  # SCRATCH
                floating[:, ::1] rec,  # SCRATCH
                floating[:, ::1] rec_h,  # SCRATCH
                floating[:, ::1] rh,  # SCRATCH
                const floating[:, :, ::1] x,  # IN
                const unsigned char[:, ::1] keep,  # IN: (B, T), or empty for no mask
                const floating[:, ::1] kernel,  # IN
                const floating[:, ::1] recurrent_kernel,  # IN
                const floating[:, ::1] recurrent_kernel_h,  # IN
                const floating[::1] input_bias,  # IN
                const floating[::1] recurrent_bias,  # IN
                Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                int activation, int recurrent_activation, bint go_backwards,
                bint return_sequences, bint reset_after, bint zero_output_for_mask):
    """GRU forward over a whole sequence; see rnnengine/kernels/__init__.py."""
    if RNNENGINE_BOUNDSCHECK:
        _expect_shape("y_out", y_out.shape, 3, B, T if return_sequences else 1, H)
        _expect_shape("h", h.shape, 2, B, H)
        _expect_shape("xproj", xproj.shape, 3, B, T, 3 * H)
        _expect_shape("rec", rec.shape, 2, B, 3 * H)
        _expect_shape("rec_h", rec_h.shape, 2, B, H)
        _expect_shape("rh", rh.shape, 2, B, H)
        _expect_shape("x", x.shape, 3, B, T, C)
        _expect_shape("kernel", kernel.shape, 2, C, 3 * H)
        _expect_shape("recurrent_kernel", recurrent_kernel.shape, 2, H, 3 * H)
        _expect_shape("recurrent_kernel_h", recurrent_kernel_h.shape, 2, H, H)
        _expect_shape("input_bias", input_bias.shape, 1, 3 * H)
        _expect_shape("recurrent_bias", recurrent_bias.shape, 1, 3 * H)
        if keep.shape[0] != 0:
            _expect_shape("keep", keep.shape, 2, B, T)
    # Split the batch into n contiguous row blocks, one per thread, each running
    # the whole sequence: rows never interact (see _batch_threads in _gates.pxd).
    cdef Py_ssize_t T_out = T if return_sequences else 1
    cdef int n = _batch_threads(B, B * T * (C + H) * 3 * H)
    cdef Py_ssize_t i, b0, nb
    cdef floating* y_p = &y_out[0, 0, 0]
    cdef floating* h_p = &h[0, 0]
    cdef floating* xp_p = &xproj[0, 0, 0]
    cdef floating* rec_p = &rec[0, 0]
    cdef floating* rech_p = &rec_h[0, 0]
    cdef floating* rh_p = &rh[0, 0]
    cdef const floating* x_p = &x[0, 0, 0]
    cdef const unsigned char* k_p = &keep[0, 0] if keep.shape[0] != 0 else NULL
    cdef int watched = _watch(B * T * (C + H) * 3 * H)
    cdef int was
    with nogil:
        if n == 1:
            _gru_forward(y_p, h_p, xp_p, rec_p, rech_p, rh_p, x_p, k_p, &kernel[0, 0],
                         &recurrent_kernel[0, 0], &recurrent_kernel_h[0, 0], &input_bias[0],
                         &recurrent_bias[0], B, T, C, H, activation, recurrent_activation, go_backwards,
                         return_sequences, reset_after, zero_output_for_mask)
        else:
            for i in prange(n, schedule='static', num_threads=n):
                was = _join_watch(watched)
                b0 = i * B // n
                nb = (i + 1) * B // n - b0
                _gru_forward(y_p + b0 * T_out * H, h_p + b0 * H, xp_p + b0 * T * 3 * H, rec_p + b0 * 3 * H,
                             rech_p + b0 * H, rh_p + b0 * H, x_p + b0 * T * C,
                             k_p + b0 * T if k_p != NULL else NULL, &kernel[0, 0],
                             &recurrent_kernel[0, 0], &recurrent_kernel_h[0, 0], &input_bias[0],
                             &recurrent_bias[0], nb, T, C, H, activation, recurrent_activation,
                             go_backwards, return_sequences, reset_after, zero_output_for_mask)
                _join_watch(was)
    _unwatch(watched)


# -- training -----------------------------------------------------------------------------

cdef inline void _gru_skip_row(floating* h_tm1_seq, floating* preact, floating* gates,
                               floating* hh_rec_seq, floating* rh, const floating* h,
                               Py_ssize_t b, Py_ssize_t T, Py_ssize_t t,
                               Py_ssize_t H) noexcept nogil:
    # forward_train, a masked row's step (_skip_row), its hh_rec_seq and rh rows
    # zeroed (without reset_after, the product rh @ U_h reads rh; unused).
    cdef Py_ssize_t bt = b * T + t
    _skip_row(h_tm1_seq + bt * H, h + b * H, preact + bt * 3 * H, gates + bt * 3 * H, H, 3 * H)
    memset(hh_rec_seq + bt * H, 0, H * sizeof(floating))
    memset(rh + b * H, 0, H * sizeof(floating))


cdef void _gru_forward_train(floating* y_out, floating* h, floating* h_tm1_seq,
                             floating* preact, floating* gates, floating* hh_rec_seq,
                             floating* rec, floating* rec_h, floating* rh,
                             const floating* x, const unsigned char* keep, const floating* kernel,
                             const floating* recurrent_kernel,
                             const floating* recurrent_kernel_h,
                             const floating* input_bias, const floating* recurrent_bias,
                             Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                             int activation, int recurrent_activation, bint go_backwards,
                             bint return_sequences, bint reset_after,
                             bint zero_output_for_mask) noexcept nogil:
    # y_out is (B, T or 1, H); h is (B, H), initial state in, final state out;
    # h_tm1_seq and hh_rec_seq (B, T, H), preact and gates (B, T, 3H), saved at
    # the input time t; rec (B, 3H), rec_h and rh (B, H) are scratch;
    # x is (B, T, C); keep is (B, T) or NULL (src/_mask.pxd); kernel is
    # (C, 3H); recurrent_kernel is (H, 3H); recurrent_kernel_h is its last
    # block (H, H), contiguous; input_bias and recurrent_bias are (3H,).
    cdef Py_ssize_t K = 3 * H
    cdef Py_ssize_t s, t, b, j
    cdef floating* z
    cdef floating* pa
    cdef floating* hb
    cdef floating* hr
    cdef floating* hh
    # preact.reshape(B * T, 3H)[:] = x.reshape(B * T, C) @ kernel; each step
    # then adds the biases and recurrent terms in place.
    _input_product(preact, x, kernel, B * T, C, K)
    for s in range(T):
        if _stopped():  # SIGINT: the driver raises KeyboardInterrupt
            break
        t = T - 1 - s if go_backwards else s
        if not _step_runs(keep, B, T, t):
            for b in range(B):
                _gru_skip_row(h_tm1_seq, preact, gates, hh_rec_seq, rh, h, b, T, t, H)
        elif reset_after:
            # rec[:] = h_tm1 @ recurrent_kernel
            _recurrent_product(rec, h, recurrent_kernel, <int>B, <int>H, <int>K, <int>K, <int>K)
            for b in range(B):
                if not _row_runs(keep, T, b, t):  # a masked row carries its state through
                    _gru_skip_row(h_tm1_seq, preact, gates, hh_rec_seq, rh, h, b, T, t, H)
                    continue
                z = rec + b * K
                pa = preact + (b * T + t) * K
                hb = h + b * H
                hr = hh_rec_seq + (b * T + t) * H
                memcpy(h_tm1_seq + (b * T + t) * H, hb, H * sizeof(floating))
                for j in range(2 * H):
                    z[j] += pa[j] + input_bias[j] + recurrent_bias[j]
                    pa[j] = z[j]
                activate_block(z, 2 * H, recurrent_activation)  # z, r
                # a_h = x_h + r * (h_tm1 @ U_h + b_rec_h)
                for j in range(H):
                    hr[j] = z[2 * H + j] + recurrent_bias[2 * H + j]
                    z[2 * H + j] = pa[2 * H + j] + input_bias[2 * H + j] + z[H + j] * hr[j]
                    pa[2 * H + j] = z[2 * H + j]
                activate_block(z + 2 * H, H, activation)
                memcpy(gates + (b * T + t) * K, z, K * sizeof(floating))
                for j in range(H):
                    hb[j] = z[j] * hb[j] + (1 - z[j]) * z[2 * H + j]
        else:
            # rec[:, :2H] = h_tm1 @ recurrent_kernel[:, :2H]
            _recurrent_product(rec, h, recurrent_kernel, <int>B, <int>H, <int>(2 * H), <int>K, <int>K)
            for b in range(B):
                if not _row_runs(keep, T, b, t):
                    _gru_skip_row(h_tm1_seq, preact, gates, hh_rec_seq, rh, h, b, T, t, H)
                    continue
                z = rec + b * K
                pa = preact + (b * T + t) * K
                hb = h + b * H
                memcpy(h_tm1_seq + (b * T + t) * H, hb, H * sizeof(floating))
                for j in range(2 * H):
                    z[j] += pa[j] + input_bias[j]
                    pa[j] = z[j]
                activate_block(z, 2 * H, recurrent_activation)  # z, r
                memcpy(gates + (b * T + t) * K, z, 2 * H * sizeof(floating))
                for j in range(H):
                    rh[b * H + j] = z[H + j] * hb[j]
                memcpy(hh_rec_seq + (b * T + t) * H, rh + b * H, H * sizeof(floating))
            # rec_h[:] = rh @ recurrent_kernel_h
            _recurrent_product(rec_h, rh, recurrent_kernel_h, <int>B, <int>H, <int>H, <int>H, <int>H)
            for b in range(B):
                if not _row_runs(keep, T, b, t):
                    continue
                z = rec + b * K
                pa = preact + (b * T + t) * K
                hb = h + b * H
                hh = rec_h + b * H
                # a_h = x_h + (r * h_tm1) @ U_h
                for j in range(H):
                    hh[j] += pa[2 * H + j] + input_bias[2 * H + j]
                    pa[2 * H + j] = hh[j]
                activate_block(hh, H, activation)
                memcpy(gates + (b * T + t) * K + 2 * H, hh, H * sizeof(floating))
                for j in range(H):
                    hb[j] = z[j] * hb[j] + (1 - z[j]) * hh[j]
        # y_out[:, s] = h (every step), or y_out[:, 0] = h (last step only); masked: _mask.pxd
        _write_output(y_out, h, keep, B, T, H, s, t, return_sequences, zero_output_for_mask)


cdef void _gru_backward_rows(floating* dx, floating* dh0, floating* dgates,
                             floating* dhh_rec_seq, floating* dgates_t, floating* dh_rec,
                             floating* dhh_t, floating* dcarry, const floating* dy,
                             const floating* dh_n,
                             const floating* h_tm1_seq, const floating* preact,
                             const floating* gates, const floating* hh_rec_seq,
                             const unsigned char* keep,
                             const floating* kernel, const floating* recurrent_kernel,
                             const floating* recurrent_kernel_h, Py_ssize_t B,
                             Py_ssize_t T, Py_ssize_t C, Py_ssize_t H, int activation,
                             int recurrent_activation, bint go_backwards,
                             bint return_sequences, bint reset_after,
                             bint zero_output_for_mask) noexcept nogil:
    # The per-row part of the backward for B rows: dx (B, T, C) and dh0 (B, H)
    # written, dh0 carrying the running dh_t; dgates (B, T, 3H) the
    # activations' derivatives, then the gradient w.r.t. preact; dhh_rec_seq
    # (B, T, H) the gradient w.r.t. the candidate's recurrent product;
    # dgates_t (B, 3H), dh_rec and dhh_t (B, H) scratch; dcarry (B, H) scratch
    # with a mask (keep (B, T), or NULL: src/_mask.pxd; a masked row's step
    # passes dh on unchanged); dy (B, T or 1, H);
    # dh_n (B, H), may alias dh0; h_tm1_seq, hh_rec_seq (B, T, H), preact and
    # gates (B, T, 3H).
    cdef Py_ssize_t G = 3 * H
    cdef Py_ssize_t T_out = T if return_sequences else 1
    cdef Py_ssize_t s, t, b, j, bt
    cdef floating d_h, z, hh, r, da_h, da_z, da_r, dhh_rec, drh
    cdef floating* dh
    cdef floating* dg
    cdef floating* w
    cdef floating* dhr
    cdef const floating* gt
    cdef const floating* ht
    cdef const floating* hr
    cdef const floating* dyb
    # dgates starts as the activations' derivatives, e.g. d(z)/d(a_z).
    apply_grad_rows(dgates, preact, gates, B * T, G, 0, 2 * H, recurrent_activation)
    apply_grad_rows(dgates, preact, gates, B * T, G, 2 * H, G, activation)
    _start_backward(dh0, dcarry, dy, dh_n, keep, B, H, return_sequences)
    for s in range(T - 1, -1, -1):
        if _stopped():  # SIGINT: the driver raises KeyboardInterrupt
            break
        t = T - 1 - s if go_backwards else s
        for b in range(B):
            bt = b * T + t
            dh = dh0 + b * H
            dg = dgates + bt * G
            gt = gates + bt * G
            ht = h_tm1_seq + bt * H
            hr = hh_rec_seq + bt * H
            dhr = dhh_rec_seq + bt * H
            w = dgates_t + b * G
            dyb = dy + (b * T_out + (s if return_sequences else 0)) * H
            if keep != NULL:
                if not keep[b * T + t]:
                    _masked_dout(dcarry + b * H, w, dg, dyb, H, G, return_sequences,
                                 zero_output_for_mask)
                    memset(dhr, 0, H * sizeof(floating))
                    memset(dhh_t + b * H, 0, H * sizeof(floating))
                    continue
                _step_dout(dh, dcarry + b * H, dyb, H, return_sequences)
            elif return_sequences:
                for j in range(H):
                    dh[j] += dyb[j]
            for j in range(H):
                d_h = dh[j]
                z = gt[j]
                hh = gt[2 * H + j]
                # forward: h = z * h_tm1 + (1 - z) * hh
                dh[j] = d_h * z
                # forward: hh = act(a_h); z = ract(a_z)
                da_h = d_h * (1 - z) * dg[2 * H + j]
                da_z = d_h * (ht[j] - hh) * dg[j]
                dg[j] = da_z
                dg[2 * H + j] = da_h
                w[j] = da_z
                if reset_after:
                    # forward: a_h = x_h + input_bias_h + r * hh_rec; r = ract(a_r)
                    r = gt[H + j]
                    dhh_rec = da_h * r
                    da_r = da_h * hr[j] * dg[H + j]
                    dg[H + j] = da_r
                    w[H + j] = da_r
                    w[2 * H + j] = dhh_rec
                    dhr[j] = dhh_rec
                else:
                    # forward: a_h = x_h + input_bias_h + rh @ U_h; da_r needs
                    # d(rh), which needs this step's whole da_h: a product first.
                    dhh_t[b * H + j] = da_h
                    dhr[j] = da_h
        if keep != NULL and not _step_runs(keep, B, T, t):
            continue  # no row ran step t: every dh passes on unchanged, no product
        if reset_after and keep == NULL:
            # forward: rec = h_tm1 @ recurrent_kernel, so dh_tm1 += drec @ recurrent_kernel^T
            _gemm(NoTrans, Trans, <int>B, <int>H, <int>G, 1, dgates_t, <int>G,
                  recurrent_kernel, <int>G, 1, dh0, <int>H)
        elif reset_after:  # masked: a masked row's dh_t passes to the step before unchanged
            _gemm(NoTrans, Trans, <int>B, <int>H, <int>G, 1, dgates_t, <int>G,
                  recurrent_kernel, <int>G, 0, dh_rec, <int>H)
            _take_valid_rows(dh0, dh_rec, keep, B, T, H, t, True)
        else:
            # dh_rec = d(rh) = da_h @ U_h^T
            _gemm(NoTrans, Trans, <int>B, <int>H, <int>H, 1, dhh_t, <int>H,
                  recurrent_kernel_h, <int>H, 0, dh_rec, <int>H)
            for b in range(B):
                if not _row_runs(keep, T, b, t):
                    continue
                bt = b * T + t
                dh = dh0 + b * H
                dg = dgates + bt * G
                gt = gates + bt * G
                ht = h_tm1_seq + bt * H
                w = dgates_t + b * G
                for j in range(H):
                    # forward: rh = r * h_tm1, r = ract(a_r)
                    drh = dh_rec[b * H + j]
                    dh[j] += drh * gt[H + j]
                    da_r = drh * ht[j] * dg[H + j]
                    dg[H + j] = da_r
                    w[H + j] = da_r
            # forward: rec[:, :2H] = h_tm1 @ recurrent_kernel[:, :2H], so
            # dh_tm1 += dgates_t[:, :2H] @ recurrent_kernel[:, :2H]^T
            if keep == NULL:
                _gemm(NoTrans, Trans, <int>B, <int>H, <int>(2 * H), 1, dgates_t, <int>G,
                      recurrent_kernel, <int>G, 1, dh0, <int>H)
            else:  # a masked row's dh_t passes to the step before unchanged
                _gemm(NoTrans, Trans, <int>B, <int>H, <int>(2 * H), 1, dgates_t, <int>G,
                      recurrent_kernel, <int>G, 0, dh_rec, <int>H)
                _take_valid_rows(dh0, dh_rec, keep, B, T, H, t, True)
    # forward: preact = x @ kernel + ..., so dx = dgates @ kernel^T
    _gemm(NoTrans, Trans, <int>(B * T), <int>C, <int>G, 1, dgates, <int>G,
          kernel, <int>G, 0, dx, <int>C)


cdef void _weight_grads_cols(floating* dkernel, floating* drecurrent_kernel,
                             floating* dinput_bias, floating* drecurrent_bias,
                             const floating* dgates, const floating* dhh_rec_seq,
                             const floating* x, const floating* h_tm1_seq,
                             const floating* hh_rec_seq, Py_ssize_t N, Py_ssize_t C,
                             Py_ssize_t H, bint reset_after, Py_ssize_t g0,
                             Py_ssize_t g1) noexcept nogil:
    # Columns g0:g1 (of 3H) of the weight gradients, summed over all N = B*T
    # rows: dkernel (C, 3H), drecurrent_kernel (H, 3H), dinput_bias and
    # drecurrent_bias (3H,) accumulated (drecurrent_bias only with
    # reset_after); dgates (N, 3H), dhh_rec_seq, h_tm1_seq, hh_rec_seq (N, H),
    # x (N, C).
    cdef Py_ssize_t G = 3 * H
    cdef Py_ssize_t n, k, a1, c0
    if g1 <= g0 or _stopped():  # SIGINT: the gradients are dropped
        return
    # dkernel[:, g0:g1] += x^T @ dgates[:, g0:g1]
    _gemm(Trans, NoTrans, <int>C, <int>(g1 - g0), <int>N, 1, x, <int>C,
          dgates + g0, <int>G, 1, dkernel + g0, <int>G)
    # dinput_bias[g0:g1] += dgates[:, g0:g1].sum(axis=0)
    for n in range(N):
        for k in range(g0, g1):
            dinput_bias[k] += dgates[n * G + k]
    # The z and r blocks pair h_tm1 with dgates.
    a1 = g1 if g1 < 2 * H else 2 * H
    if a1 > g0:
        # drecurrent_kernel[:, g0:a1] += h_tm1^T @ dgates[:, g0:a1]
        _gemm(Trans, NoTrans, <int>H, <int>(a1 - g0), <int>N, 1, h_tm1_seq, <int>H,
              dgates + g0, <int>G, 1, drecurrent_kernel + g0, <int>G)
        if reset_after:
            for n in range(N):
                for k in range(g0, a1):
                    drecurrent_bias[k] += dgates[n * G + k]
    # The h block pairs the candidate's recurrent operand with dhh_rec_seq:
    # h_tm1^T @ d(h_tm1 @ U_h) with reset_after, rh^T @ d(rh @ U_h) without.
    c0 = g0 if g0 > 2 * H else 2 * H
    if g1 > c0:
        _gemm(Trans, NoTrans, <int>H, <int>(g1 - c0), <int>N, 1,
              h_tm1_seq if reset_after else hh_rec_seq, <int>H,
              dhh_rec_seq + (c0 - 2 * H), <int>H, 1, drecurrent_kernel + c0, <int>G)
        if reset_after:
            for n in range(N):
                for k in range(c0, g1):
                    drecurrent_bias[k] += dhh_rec_seq[n * H + k - 2 * H]


def gru_forward_train(floating[:, :, ::1] y_out,  # OUT
                      floating[:, ::1] h,  # IN/OUT
                      floating[:, :, ::1] h_tm1_seq,  # OUT (saved)
                      floating[:, :, ::1] preact,  # OUT (saved)
                      floating[:, :, ::1] gates,  # OUT (saved)
                      floating[:, :, ::1] hh_rec_seq,  # OUT (saved)
                      floating[:, ::1] rec,  # SCRATCH
                      floating[:, ::1] rec_h,  # SCRATCH
                      floating[:, ::1] rh,  # SCRATCH
                      const floating[:, :, ::1] x,  # IN
                      const unsigned char[:, ::1] keep,  # IN: (B, T), or empty for no mask
                      const floating[:, ::1] kernel,  # IN
                      const floating[:, ::1] recurrent_kernel,  # IN
                      const floating[:, ::1] recurrent_kernel_h,  # IN
                      const floating[::1] input_bias,  # IN
                      const floating[::1] recurrent_bias,  # IN
                      Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                      int activation, int recurrent_activation, bint go_backwards,
                      bint return_sequences, bint reset_after, bint zero_output_for_mask):
    """GRU forward that saves what the backward reads; see rnnengine/kernels/__init__.py."""
    if RNNENGINE_BOUNDSCHECK:
        _expect_shape("y_out", y_out.shape, 3, B, T if return_sequences else 1, H)
        _expect_shape("h", h.shape, 2, B, H)
        _expect_shape("h_tm1_seq", h_tm1_seq.shape, 3, B, T, H)
        _expect_shape("preact", preact.shape, 3, B, T, 3 * H)
        _expect_shape("gates", gates.shape, 3, B, T, 3 * H)
        _expect_shape("hh_rec_seq", hh_rec_seq.shape, 3, B, T, H)
        _expect_shape("rec", rec.shape, 2, B, 3 * H)
        _expect_shape("rec_h", rec_h.shape, 2, B, H)
        _expect_shape("rh", rh.shape, 2, B, H)
        _expect_shape("x", x.shape, 3, B, T, C)
        _expect_shape("kernel", kernel.shape, 2, C, 3 * H)
        _expect_shape("recurrent_kernel", recurrent_kernel.shape, 2, H, 3 * H)
        _expect_shape("recurrent_kernel_h", recurrent_kernel_h.shape, 2, H, H)
        _expect_shape("input_bias", input_bias.shape, 1, 3 * H)
        _expect_shape("recurrent_bias", recurrent_bias.shape, 1, 3 * H)
        if keep.shape[0] != 0:
            _expect_shape("keep", keep.shape, 2, B, T)
    cdef Py_ssize_t G = 3 * H
    cdef Py_ssize_t T_out = T if return_sequences else 1
    cdef int n = _batch_threads(B, B * T * (C + H) * G)
    cdef Py_ssize_t i, b0, nb
    cdef const unsigned char* kp_p = &keep[0, 0] if keep.shape[0] != 0 else NULL
    cdef floating* y_p = &y_out[0, 0, 0]
    cdef floating* h_p = &h[0, 0]
    cdef floating* htm1_p = &h_tm1_seq[0, 0, 0]
    cdef floating* pa_p = &preact[0, 0, 0]
    cdef floating* g_p = &gates[0, 0, 0]
    cdef floating* hr_p = &hh_rec_seq[0, 0, 0]
    cdef floating* rec_p = &rec[0, 0]
    cdef floating* rech_p = &rec_h[0, 0]
    cdef floating* rh_p = &rh[0, 0]
    cdef const floating* x_p = &x[0, 0, 0]
    cdef const floating* k_p = &kernel[0, 0]
    cdef const floating* rk_p = &recurrent_kernel[0, 0]
    cdef const floating* rkh_p = &recurrent_kernel_h[0, 0]
    cdef const floating* ib_p = &input_bias[0]
    cdef const floating* rb_p = &recurrent_bias[0]
    cdef int watched = _watch(B * T * (C + H) * G)
    cdef int was
    with nogil:
        if n == 1:
            _gru_forward_train(y_p, h_p, htm1_p, pa_p, g_p, hr_p, rec_p, rech_p, rh_p, x_p, kp_p, k_p,
                               rk_p, rkh_p, ib_p, rb_p, B, T, C, H, activation,
                               recurrent_activation, go_backwards, return_sequences,
                               reset_after, zero_output_for_mask)
        else:
            # rows never interact: one contiguous row block per thread
            for i in prange(n, schedule='static', num_threads=n):
                was = _join_watch(watched)
                b0 = i * B // n
                nb = (i + 1) * B // n - b0
                _gru_forward_train(
                    y_p + b0 * T_out * H, h_p + b0 * H, htm1_p + b0 * T * H, pa_p + b0 * T * G,
                    g_p + b0 * T * G, hr_p + b0 * T * H, rec_p + b0 * G, rech_p + b0 * H,
                    rh_p + b0 * H, x_p + b0 * T * C, kp_p + b0 * T if kp_p != NULL else NULL, k_p,
                    rk_p, rkh_p, ib_p, rb_p, nb, T, C, H, activation, recurrent_activation,
                    go_backwards, return_sequences, reset_after, zero_output_for_mask)
                _join_watch(was)
    _unwatch(watched)


def gru_backward(floating[:, :, ::1] dx,  # OUT
                 floating[:, ::1] dh0,  # OUT
                 floating[:, ::1] dkernel,  # IN/OUT (+=)
                 floating[:, ::1] drecurrent_kernel,  # IN/OUT (+=)
                 floating[::1] dinput_bias,  # IN/OUT (+=)
                 floating[::1] drecurrent_bias,  # IN/OUT (+=, reset_after only)
                 floating[:, :, ::1] dgates,  # SCRATCH
                 floating[:, :, ::1] dhh_rec_seq,  # SCRATCH
                 floating[:, ::1] dgates_t,  # SCRATCH
                 floating[:, ::1] dh_rec,  # SCRATCH
                 floating[:, ::1] dhh_t,  # SCRATCH
                 floating[:, ::1] dcarry,  # SCRATCH (with a mask)
                 floating[::1] dw,  # SCRATCH (unused here)
                 const floating[:, :, ::1] dy,  # IN
                 const floating[:, ::1] dh_n,  # IN (may alias dh0)
                 const floating[:, :, ::1] h_tm1_seq,  # IN (saved)
                 const floating[:, :, ::1] preact,  # IN (saved)
                 const floating[:, :, ::1] gates,  # IN (saved)
                 const floating[:, :, ::1] hh_rec_seq,  # IN (saved)
                 const floating[:, :, ::1] x,  # IN
                 const unsigned char[:, ::1] keep,  # IN: (B, T), or empty for no mask
                 const floating[:, ::1] kernel,  # IN
                 const floating[:, ::1] recurrent_kernel,  # IN
                 const floating[:, ::1] recurrent_kernel_h,  # IN
                 Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                 int activation, int recurrent_activation, bint go_backwards,
                 bint return_sequences, bint reset_after, bint zero_output_for_mask):
    """GRU backward over a whole sequence; see rnnengine/kernels/__init__.py."""
    if RNNENGINE_BOUNDSCHECK:
        _expect_shape("dx", dx.shape, 3, B, T, C)
        _expect_shape("dh0", dh0.shape, 2, B, H)
        _expect_shape("dkernel", dkernel.shape, 2, C, 3 * H)
        _expect_shape("drecurrent_kernel", drecurrent_kernel.shape, 2, H, 3 * H)
        _expect_shape("dinput_bias", dinput_bias.shape, 1, 3 * H)
        _expect_shape("drecurrent_bias", drecurrent_bias.shape, 1, 3 * H)
        _expect_shape("dgates", dgates.shape, 3, B, T, 3 * H)
        _expect_shape("dhh_rec_seq", dhh_rec_seq.shape, 3, B, T, H)
        _expect_shape("dgates_t", dgates_t.shape, 2, B, 3 * H)
        _expect_shape("dh_rec", dh_rec.shape, 2, B, H)
        _expect_shape("dhh_t", dhh_t.shape, 2, B, H)
        _expect_shape("dcarry", dcarry.shape, 2, B, H)
        _expect_shape("dw", dw.shape, 1, max(C, H) * 3 * H)
        _expect_shape("dy", dy.shape, 3, B, T if return_sequences else 1, H)
        _expect_shape("dh_n", dh_n.shape, 2, B, H)
        _expect_shape("h_tm1_seq", h_tm1_seq.shape, 3, B, T, H)
        _expect_shape("preact", preact.shape, 3, B, T, 3 * H)
        _expect_shape("gates", gates.shape, 3, B, T, 3 * H)
        _expect_shape("hh_rec_seq", hh_rec_seq.shape, 3, B, T, H)
        _expect_shape("x", x.shape, 3, B, T, C)
        _expect_shape("kernel", kernel.shape, 2, C, 3 * H)
        _expect_shape("recurrent_kernel", recurrent_kernel.shape, 2, H, 3 * H)
        _expect_shape("recurrent_kernel_h", recurrent_kernel_h.shape, 2, H, H)
        if keep.shape[0] != 0:
            _expect_shape("keep", keep.shape, 2, B, T)
    cdef Py_ssize_t G = 3 * H
    cdef Py_ssize_t T_out = T if return_sequences else 1
    cdef const unsigned char* kp_p = &keep[0, 0] if keep.shape[0] != 0 else NULL
    cdef floating* dcar_p = &dcarry[0, 0]
    # deterministic mode: one thread, so no gradient depends on the thread count
    cdef int n = 1 if _det() else _batch_threads(B, B * T * (C + H) * G)
    cdef int n_cols = n if n < G else <int>G
    cdef Py_ssize_t i, b0, nb
    cdef floating* dx_p = &dx[0, 0, 0]
    cdef floating* dh0_p = &dh0[0, 0]
    cdef floating* dk_p = &dkernel[0, 0]
    cdef floating* drk_p = &drecurrent_kernel[0, 0]
    cdef floating* dib_p = &dinput_bias[0]
    cdef floating* drb_p = &drecurrent_bias[0]
    cdef floating* dg_p = &dgates[0, 0, 0]
    cdef floating* dhr_p = &dhh_rec_seq[0, 0, 0]
    cdef floating* dgt_p = &dgates_t[0, 0]
    cdef floating* dhrec_p = &dh_rec[0, 0]
    cdef floating* dhht_p = &dhh_t[0, 0]
    cdef const floating* dy_p = &dy[0, 0, 0]
    cdef const floating* dhn_p = &dh_n[0, 0]
    cdef const floating* htm1_p = &h_tm1_seq[0, 0, 0]
    cdef const floating* pa_p = &preact[0, 0, 0]
    cdef const floating* g_p = &gates[0, 0, 0]
    cdef const floating* hr_p = &hh_rec_seq[0, 0, 0]
    cdef const floating* x_p = &x[0, 0, 0]
    cdef const floating* k_p = &kernel[0, 0]
    cdef const floating* rk_p = &recurrent_kernel[0, 0]
    cdef const floating* rkh_p = &recurrent_kernel_h[0, 0]
    cdef int watched = _watch(B * T * (C + H) * G)
    cdef int was
    with nogil:
        if n == 1:
            _gru_backward_rows(dx_p, dh0_p, dg_p, dhr_p, dgt_p, dhrec_p, dhht_p, dcar_p, dy_p, dhn_p,
                               htm1_p, pa_p, g_p, hr_p, kp_p, k_p, rk_p, rkh_p, B, T, C, H,
                               activation, recurrent_activation, go_backwards,
                               return_sequences, reset_after, zero_output_for_mask)
            _weight_grads_cols(dk_p, drk_p, dib_p, drb_p, dg_p, dhr_p, x_p, htm1_p, hr_p,
                               B * T, C, H, reset_after, 0, G)
        else:
            # the time loop: rows never interact, one row block per thread
            for i in prange(n, schedule='static', num_threads=n):
                was = _join_watch(watched)
                b0 = i * B // n
                nb = (i + 1) * B // n - b0
                _gru_backward_rows(
                    dx_p + b0 * T * C, dh0_p + b0 * H, dg_p + b0 * T * G, dhr_p + b0 * T * H,
                    dgt_p + b0 * G, dhrec_p + b0 * H, dhht_p + b0 * H, dcar_p + b0 * H,
                    dy_p + b0 * T_out * H, dhn_p + b0 * H, htm1_p + b0 * T * H, pa_p + b0 * T * G,
                    g_p + b0 * T * G, hr_p + b0 * T * H, kp_p + b0 * T if kp_p != NULL else NULL,
                    k_p, rk_p, rkh_p, nb, T, C, H, activation, recurrent_activation,
                    go_backwards, return_sequences, reset_after, zero_output_for_mask)
                _join_watch(was)
            # the weight gradients: one column block per thread, no two threads
            # adding into the same element
            for i in prange(n_cols, schedule='static', num_threads=n_cols):
                was = _join_watch(watched)
                _weight_grads_cols(dk_p, drk_p, dib_p, drb_p, dg_p, dhr_p, x_p, htm1_p, hr_p,
                                   B * T, C, H, reset_after, i * G // n_cols,
                                   (i + 1) * G // n_cols)
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
    """(float32, float64) pointers to _gru_forward as PyCapsules, for the fused
    call plans in rnnengine.kernels._cy_plan (src/_plan.pyx)."""
    # Typed through src/_call.pxd first: a signature that drifts fails to compile here.
    cdef gru_f f32 = _gru_forward[float]
    cdef gru_d f64 = _gru_forward[double]
    return (PyCapsule_New(<void*>f32, NULL, NULL), PyCapsule_New(<void*>f64, NULL, NULL))


def set_min_work_to_split(long long n):
    """Multiply-adds from which a call of this module splits its batch over threads
    (src/_gates.pxd); rnnengine.kernels._set_min_work_to_split sets every module's."""
    _set_min_work(n)


def get_min_work_to_split():
    return rnnengine_min_work


def set_split_thresholds(long long min_step, long long wake_work):
    """When a float32 call of at most 4 rows splits each step's units over two
    threads (src/_split.pxd): from min_step recurrent-kernel weights (H x 3H),
    and it wakes a sleeping helper from wake_work multiply-adds;
    rnnengine.kernels._set_split_thresholds sets every module's."""
    _set_split_thresholds(min_step, wake_work)


def get_split_thresholds():
    return rnnengine_split_min_step, rnnengine_split_wake_work


def split_chunks(Py_ssize_t B, Py_ssize_t T, Py_ssize_t H):
    """Chunks a float32 reset_after forward call of B rows, T steps and H units
    may be split into (1: the serial kernel), under this module's settings; for
    tests."""
    return _split_chunks(B, T, H, 3 * H)
