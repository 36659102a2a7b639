# cython: language_level=3
# Training kernels with Keras 3's recurrent dropout in Cython (SimpleRNN, LSTM,
# GRU), compiled into rnnengine.kernels._cy_rdrop: the twins of
# rnnengine/kernels/numba_rdrop.py.
#
# Contract: the *_forward_train_rdrop / *_backward_rdrop section of
# rnnengine/kernels/__init__.py (names, roles and shapes: kernels/contract.py).
# They compute what the plain training passes compute, with Keras 3's masks
# (implementation=1): gate g reads x * dp[g] and h_tm1 * rdp[g], each mask
# (B, C) or (B, H) fixed over the sequence; the state itself is not masked.
# The weights come as per-gate contiguous blocks kernel_g (K, C, H) and
# recurrent_kernel_g (K, H, H). float32 or float64 through the fused
# `floating` type; every buffer C-contiguous; weights, x and the masks may be
# read-only. The def entry turns memoryviews into pointers and releases the
# GIL; the work is in `noexcept nogil` pointer kernels, which never allocate
# and never raise.
#
# Design: the Numba kernels' operations in their order, with the products
# reading and writing their column blocks in place through leading
# dimensions (Numba copies each gate's block to pm/recg first; here pm and
# recg are not needed): per gate, one GEMM projects every timestep of the
# masked input (xm = x * dp[g], (B*T, C)) into preact[..., gH:(g+1)H]; per
# step and gate, one product (h_tm1 * rdp[g]) @ U_g into rec[:, gH:(g+1)H]
# (_recurrent_product: row-invariant for float32); the gates with the
# vectorized activate_block of the other Cython kernels. The backward's time
# loop is one elementwise pass and per gate one product
# dgates_t[:, gH:(g+1)H] @ U_g^T, masked by rdp[g] as it is added into dh;
# dx = sum_g (dgates_g @ kernel_g[g]^T) * dp[g] follows for the block's rows.
# Threads (_gates.pxd): a large batch splits into row blocks, one per thread,
# in both passes (rows never interact; a block's masks are rows b0:b0+nb of
# each gate's, so the kernels take the full batch's row count for the masks'
# gate stride). The weight gradients are sums over every (b, t) with a
# per-gate masked operand: after all blocks, gate by gate, that operand is
# built once (xm = x * dp[g], hseq = h_tm1_seq * rdp[g]) and the GEMMs
# (beta = 1, straight into the accumulators: Numba's dw scratch is not needed)
# split over threads by output columns, so that no two threads add into the
# same element. Deterministic mode: one thread in the backward, row-invariant
# products in the forward, as in the other kernel modules.
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy

from _blas cimport (NoTrans, Trans, _det, _gemm, _join_watch, _load_det, _load_interrupt, _recurrent_product,
                   _rowinv_product, _stopped, _this_thread_watched, _unwatch, _watch)
from _gates cimport (RNNENGINE_BOUNDSCHECK, _batch_threads, _expect_shape, _set_gate_threads,
                     _set_min_work, activate_block, apply_grad_block, apply_grad_rows,
                     rnnengine_gate_threads, rnnengine_min_work)

_load_det()
_load_interrupt()


# -- shared pieces --------------------------------------------------------------------------

cdef inline void _mask_rows(floating* out, const floating* a, const floating* m,
                            Py_ssize_t B, Py_ssize_t T, Py_ssize_t n) noexcept nogil:
    # out (B*T, n) = a (B, T, n) * m (B, n), the mask broadcast over T
    cdef Py_ssize_t b, t, j
    cdef floating* o
    cdef const floating* ar
    cdef const floating* mb
    for b in range(B):
        mb = m + b * n
        for t in range(T):
            o = out + (b * T + t) * n
            ar = a + (b * T + t) * n
            for j in range(n):
                o[j] = ar[j] * mb[j]


cdef inline void _product_into(floating* out, const floating* a, const floating* w,
                               Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                               Py_ssize_t ldo) noexcept nogil:
    # out[:M, :N] (rows ldo apart) = a (M, K) @ w (K, N): one GEMM, or in
    # deterministic mode the row-invariant product (as _blas._input_product).
    if _det():
        _rowinv_product(out, a, w, <int>M, <int>N, <int>K, <int>K, <int>N, <int>ldo)
    else:
        _gemm(NoTrans, NoTrans, <int>M, <int>N, <int>K, 1, a, <int>K, w, <int>N, 0, out, <int>ldo)


cdef inline void _masked_projection(floating* preact, const floating* x, const floating* dp,
                                    const floating* kernel_g, floating* xm, Py_ssize_t B,
                                    Py_ssize_t T, Py_ssize_t C, Py_ssize_t H, Py_ssize_t K,
                                    Py_ssize_t mB) noexcept nogil:
    # preact[:, :, g*H:(g+1)*H] = (x * dp[g]) @ kernel_g[g], for each gate g;
    # dp's gates are mB * C apart; xm (B*T, C) is scratch.
    cdef Py_ssize_t g
    for g in range(K):
        _mask_rows(xm, x, dp + g * mB * C, B, T, C)
        _product_into(preact + g * H, xm, kernel_g + g * C * H, B * T, H, C, K * H)


cdef inline void _masked_recurrent(floating* rec, const floating* h, const floating* rdp,
                                   const floating* recurrent_kernel_g, floating* hm,
                                   Py_ssize_t B, Py_ssize_t H, Py_ssize_t G, Py_ssize_t g0,
                                   Py_ssize_t g1, Py_ssize_t mB) noexcept nogil:
    # rec[:, g*H:(g+1)*H] = (h * rdp[g]) @ recurrent_kernel_g[g] for g in [g0, g1);
    # rec is (B, G); rdp's gates are mB * H apart; hm (B, H) is scratch.
    cdef Py_ssize_t g
    for g in range(g0, g1):
        _mask_rows(hm, h, rdp + g * mB * H, B, 1, H)
        _recurrent_product(rec + g * H, hm, recurrent_kernel_g + g * H * H, <int>B, <int>H,
                           <int>H, <int>H, <int>G)


cdef inline void _masked_recurrent_grad(floating* dh, const floating* dgates_t,
                                        const floating* rdp, const floating* recurrent_kernel_g,
                                        floating* hm, Py_ssize_t B, Py_ssize_t H, Py_ssize_t G,
                                        Py_ssize_t g0, Py_ssize_t g1,
                                        Py_ssize_t mB) noexcept nogil:
    # forward: rec_g = (h_tm1 * rdp[g]) @ U_g, so dh_tm1 += (drec_g @ U_g^T) * rdp[g];
    # dgates_t is (B, G), hm (B, H) scratch.
    cdef Py_ssize_t g, b, j
    cdef const floating* m
    cdef floating* d
    cdef floating* p
    for g in range(g0, g1):
        _gemm(NoTrans, Trans, <int>B, <int>H, <int>H, 1, dgates_t + g * H, <int>G,
              recurrent_kernel_g + g * H * H, <int>H, 0, hm, <int>H)
        for b in range(B):
            m = rdp + g * mB * H + b * H
            d = dh + b * H
            p = hm + b * H
            for j in range(H):
                d[j] += p[j] * m[j]


cdef inline void _masked_input_grad(floating* dx, const floating* dgates, const floating* dp,
                                    const floating* kernel_g, floating* xm, Py_ssize_t B,
                                    Py_ssize_t T, Py_ssize_t C, Py_ssize_t H, Py_ssize_t K,
                                    Py_ssize_t mB) noexcept nogil:
    # forward: preact_g = (x * dp[g]) @ kernel_g[g], so
    # dx = sum_g (dgates_g @ kernel_g[g]^T) * dp[g]; dgates (B, T, K*H), xm (B*T, C) scratch.
    cdef Py_ssize_t G = K * H
    cdef Py_ssize_t g, b, t, m
    cdef floating* d
    cdef const floating* p
    cdef const floating* mk
    for b in range(B * T):
        for m in range(C):
            dx[b * C + m] = 0
    for g in range(K):
        _gemm(NoTrans, Trans, <int>(B * T), <int>C, <int>H, 1, dgates + g * H, <int>G,
              kernel_g + g * C * H, <int>H, 0, xm, <int>C)
        for b in range(B):
            mk = dp + g * mB * C + b * C
            for t in range(T):
                d = dx + (b * T + t) * C
                p = xm + (b * T + t) * C
                for m in range(C):
                    d[m] += p[m] * mk[m]


cdef void _weight_grad_cols(floating* acc, Py_ssize_t ld_acc, floating* bias_acc,
                            const floating* operand, Py_ssize_t R, const floating* src,
                            Py_ssize_t ld_src, Py_ssize_t N, Py_ssize_t j0,
                            Py_ssize_t j1) noexcept nogil:
    # Columns j0:j1 of one gate's weight gradient, summed over all N = B*T rows:
    # acc[:, j0:j1] (R rows, ld_acc apart) += operand (N, R)^T @ src[:, j0:j1]
    # (rows ld_src apart), and bias_acc[j0:j1] += src[:, j0:j1].sum(axis=0)
    # unless bias_acc is NULL.
    cdef Py_ssize_t n, k
    if j1 <= j0 or _stopped():  # SIGINT: the gradients are dropped
        return
    _gemm(Trans, NoTrans, <int>R, <int>(j1 - j0), <int>N, 1, operand, <int>R,
          src + j0, <int>ld_src, 1, acc + j0, <int>ld_acc)
    if bias_acc != NULL:
        for n in range(N):
            for k in range(j0, j1):
                bias_acc[k] += src[n * ld_src + k]


cdef inline void _weight_grad(floating* acc, Py_ssize_t ld_acc, floating* bias_acc,
                              const floating* operand, Py_ssize_t R, const floating* src,
                              Py_ssize_t ld_src, Py_ssize_t N, Py_ssize_t H,
                              int n_cols) noexcept nogil:
    # _weight_grad_cols over one gate's H columns, split over n_cols threads.
    cdef Py_ssize_t i
    cdef int watched = _this_thread_watched(), was
    if n_cols <= 1:
        _weight_grad_cols(acc, ld_acc, bias_acc, operand, R, src, ld_src, N, 0, H)
        return
    for i in prange(n_cols, schedule='static', num_threads=n_cols):
        was = _join_watch(watched)
        _weight_grad_cols(acc, ld_acc, bias_acc, operand, R, src, ld_src, N,
                          i * H // n_cols, (i + 1) * H // n_cols)
        _join_watch(was)


cdef inline void _write_output(floating* y_out, const floating* h, Py_ssize_t B, Py_ssize_t T,
                               Py_ssize_t H, Py_ssize_t s, bint return_sequences) noexcept nogil:
    # y_out[:, s] = h (every step), or y_out[:, 0] = h (last step only)
    cdef Py_ssize_t b
    cdef Py_ssize_t T_out = T if return_sequences else 1
    cdef Py_ssize_t s_out = s if return_sequences else 0
    if return_sequences or s == T - 1:
        for b in range(B):
            memcpy(y_out + (b * T_out + s_out) * H, h + b * H, H * sizeof(floating))


cdef inline void _init_dh(floating* dh0, const floating* dh_n, const floating* dy,
                          Py_ssize_t B, Py_ssize_t H, bint return_sequences) noexcept nogil:
    # dh0 = dh_n (+ dy[:, 0]: without return_sequences y is the last h); dh_n may alias dh0
    cdef Py_ssize_t b, j
    for b in range(B):
        for j in range(H):
            dh0[b * H + j] = dh_n[b * H + j]
        if not return_sequences:
            for j in range(H):
                dh0[b * H + j] += dy[b * H + j]


# -- debug-build shape checks ---------------------------------------------------------------

cdef int _check_common(Py_ssize_t* y_out, Py_ssize_t* h, Py_ssize_t* h_tm1_seq,
                       Py_ssize_t* preact, Py_ssize_t* gates, Py_ssize_t* rec, Py_ssize_t* x,
                       Py_ssize_t* kernel_g, Py_ssize_t* recurrent_kernel_g, Py_ssize_t* dp,
                       Py_ssize_t* rdp, Py_ssize_t* xm, Py_ssize_t* pm, Py_ssize_t* hm,
                       Py_ssize_t* recg, Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                       Py_ssize_t K, bint return_sequences) except -1:
    # RNNENGINE_BOUNDSCHECK builds: the arguments every rdrop call shares
    # (forward: y_out, h, rec; backward: dy, dh_n, dgates_t in their places).
    _expect_shape("y_out/dy", y_out, 3, B, T if return_sequences else 1, H)
    _expect_shape("h/dh_n", h, 2, B, H)
    _expect_shape("h_tm1_seq", h_tm1_seq, 3, B, T, H)
    _expect_shape("preact", preact, 3, B, T, K * H)
    _expect_shape("gates", gates, 3, B, T, K * H)
    _expect_shape("rec/dgates_t", rec, 2, B, K * H)
    _expect_shape("x", x, 3, B, T, C)
    _expect_shape("kernel_g", kernel_g, 3, K, C, H)
    _expect_shape("recurrent_kernel_g", recurrent_kernel_g, 3, K, H, H)
    _expect_shape("dp", dp, 3, K, B, C)
    _expect_shape("rdp", rdp, 3, K, B, H)
    _expect_shape("xm", xm, 2, B * T, C)
    _expect_shape("pm", pm, 2, B * T, H)
    _expect_shape("hm", hm, 2, B, H)
    _expect_shape("recg", recg, 2, B, H)
    return 0


cdef int _check_backward(Py_ssize_t* dx, Py_ssize_t* dh0, Py_ssize_t* dkernel,
                         Py_ssize_t* drecurrent_kernel, Py_ssize_t* dgates, Py_ssize_t* dgates_t,
                         Py_ssize_t* dw, Py_ssize_t* dy, Py_ssize_t* dh_n, Py_ssize_t* hseq,
                         Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H, Py_ssize_t K,
                         bint return_sequences) except -1:
    _expect_shape("dx", dx, 3, B, T, C)
    _expect_shape("dh0", dh0, 2, B, H)
    _expect_shape("dkernel", dkernel, 2, C, K * H)
    _expect_shape("drecurrent_kernel", drecurrent_kernel, 2, H, K * H)
    _expect_shape("dgates", dgates, 3, B, T, K * H)
    _expect_shape("dgates_t", dgates_t, 2, B, K * H)
    _expect_shape("dw", dw, 1, max(C, H) * K * H)
    _expect_shape("dy", dy, 3, B, T if return_sequences else 1, H)
    _expect_shape("dh_n", dh_n, 2, B, H)
    _expect_shape("hseq", hseq, 2, B * T, H)
    return 0


# -- SimpleRNN ------------------------------------------------------------------------------

cdef void _simple_rnn_forward_train_rdrop(floating* y_out, floating* h, floating* h_tm1_seq,
                                          floating* preact, floating* gates, floating* rec,
                                          const floating* x, const floating* kernel_g,
                                          const floating* recurrent_kernel_g,
                                          const floating* bias, const floating* dp,
                                          const floating* rdp, floating* xm, floating* hm,
                                          Py_ssize_t B, Py_ssize_t T, Py_ssize_t C,
                                          Py_ssize_t H, Py_ssize_t mB, int activation,
                                          bint go_backwards, bint return_sequences) noexcept nogil:
    # _simple_rnn_forward_train with h = act((x * dp) @ W + b + (h_tm1 * rdp) @ U);
    # B rows (a block of the mB-row batch whose masks dp and rdp start at row b0).
    cdef Py_ssize_t s, t, b, j, bt
    cdef floating* z
    cdef floating* pa
    _masked_projection(preact, x, dp, kernel_g, xm, B, T, C, H, 1, mB)
    for s in range(T):
        if _stopped():  # SIGINT: the driver raises KeyboardInterrupt
            break
        t = T - 1 - s if go_backwards else s
        _masked_recurrent(rec, h, rdp, recurrent_kernel_g, hm, B, H, H, 0, 1, mB)
        for b in range(B):
            bt = (b * T + t) * H
            z = rec + b * H
            pa = preact + bt
            memcpy(h_tm1_seq + bt, h + b * H, H * sizeof(floating))
            for j in range(H):
                z[j] = pa[j] + bias[j] + z[j]
                pa[j] = z[j]
            activate_block(z, H, activation)
            memcpy(gates + bt, z, H * sizeof(floating))
            memcpy(h + b * H, z, H * sizeof(floating))
        _write_output(y_out, h, B, T, H, s, return_sequences)


cdef void _simple_rnn_backward_rdrop_rows(floating* dx, floating* dh0, floating* dgates,
                                          floating* dgates_t, const floating* dy,
                                          const floating* dh_n, const floating* preact,
                                          const floating* gates, const floating* kernel_g,
                                          const floating* recurrent_kernel_g,
                                          const floating* dp, const floating* rdp,
                                          floating* xm, floating* hm, Py_ssize_t B,
                                          Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                                          Py_ssize_t mB, int activation, bint go_backwards,
                                          bint return_sequences) noexcept nogil:
    # The per-row part of the backward for B rows: dx, dh0, dgates (the
    # gradient w.r.t. preact) written; dgates_t, xm and hm scratch.
    cdef Py_ssize_t T_out = T if return_sequences else 1
    cdef Py_ssize_t s, t, b, j
    cdef floating dv
    cdef floating* dh
    cdef floating* dg
    cdef floating* dgt
    cdef const floating* dyb
    apply_grad_rows(dgates, preact, gates, B * T, H, 0, H, activation)
    _init_dh(dh0, dh_n, dy, B, H, return_sequences)
    for s in range(T - 1, -1, -1):
        if _stopped():  # SIGINT: the driver raises KeyboardInterrupt
            break
        t = T - 1 - s if go_backwards else s
        for b in range(B):
            dh = dh0 + b * H
            dg = dgates + (b * T + t) * H
            dgt = dgates_t + b * H
            if return_sequences:
                dyb = dy + (b * T_out + s) * H
                for j in range(H):
                    dh[j] += dyb[j]
            for j in range(H):
                dv = dh[j] * dg[j]  # forward: h_bt = apply(activation, v)
                dgt[j] = dv
                dg[j] = dv
                dh[j] = 0  # h_tm1 reaches this step only through the masked product
        _masked_recurrent_grad(dh0, dgates_t, rdp, recurrent_kernel_g, hm, B, H, H, 0, 1, mB)
    _masked_input_grad(dx, dgates, dp, kernel_g, xm, B, T, C, H, 1, mB)


def simple_rnn_forward_train_rdrop(floating[:, :, ::1] y_out,  # OUT
                                   floating[:, ::1] h,  # IN/OUT
                                   floating[:, :, ::1] h_tm1_seq,  # OUT (saved)
                                   floating[:, :, ::1] preact,  # OUT (saved)
                                   floating[:, :, ::1] gates,  # OUT (saved)
                                   floating[:, ::1] rec,  # SCRATCH
                                   const floating[:, :, ::1] x,  # IN
                                   const floating[:, :, ::1] kernel_g,  # IN (K, C, H)
                                   const floating[:, :, ::1] recurrent_kernel_g,  # IN (K, H, H)
                                   const floating[::1] bias,  # IN
                                   const floating[:, :, ::1] dp,  # IN (K, B, C)
                                   const floating[:, :, ::1] rdp,  # IN (K, B, H)
                                   floating[:, ::1] xm,  # SCRATCH (B*T, C)
                                   floating[:, ::1] pm,  # SCRATCH (unused here)
                                   floating[:, ::1] hm,  # SCRATCH (B, H)
                                   floating[:, ::1] recg,  # SCRATCH (unused here)
                                   Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                                   int activation, bint go_backwards, bint return_sequences):
    """SimpleRNN forward_train with recurrent dropout; see rnnengine/kernels/__init__.py."""
    if RNNENGINE_BOUNDSCHECK:
        _check_common(y_out.shape, h.shape, h_tm1_seq.shape, preact.shape, gates.shape, rec.shape,
                      x.shape, kernel_g.shape, recurrent_kernel_g.shape, dp.shape, rdp.shape,
                      xm.shape, pm.shape, hm.shape, recg.shape, B, T, C, H, 1, return_sequences)
        _expect_shape("bias", bias.shape, 1, H)
    cdef Py_ssize_t T_out = T if return_sequences else 1
    cdef int n = _batch_threads(B, B * T * (C + H) * H)
    cdef Py_ssize_t i, b0, nb
    cdef floating* y_p = &y_out[0, 0, 0]
    cdef floating* h_p = &h[0, 0]
    cdef floating* htm1_p = &h_tm1_seq[0, 0, 0]
    cdef floating* pa_p = &preact[0, 0, 0]
    cdef floating* g_p = &gates[0, 0, 0]
    cdef floating* rec_p = &rec[0, 0]
    cdef const floating* x_p = &x[0, 0, 0]
    cdef const floating* dp_p = &dp[0, 0, 0]
    cdef const floating* rdp_p = &rdp[0, 0, 0]
    cdef floating* xm_p = &xm[0, 0]
    cdef floating* hm_p = &hm[0, 0]
    cdef int watched = _watch(B * T * (C + H) * H)
    cdef int was
    with nogil:
        if n == 1:
            _simple_rnn_forward_train_rdrop(y_p, h_p, htm1_p, pa_p, g_p, rec_p, x_p, &kernel_g[0, 0, 0],
                                            &recurrent_kernel_g[0, 0, 0], &bias[0], dp_p, rdp_p, xm_p,
                                            hm_p, B, T, C, H, B, activation, go_backwards,
                                            return_sequences)
        else:
            # rows never interact: one contiguous row block per thread
            for i in prange(n, schedule='static', num_threads=n):
                was = _join_watch(watched)
                b0 = i * B // n
                nb = (i + 1) * B // n - b0
                _simple_rnn_forward_train_rdrop(
                    y_p + b0 * T_out * H, h_p + b0 * H, htm1_p + b0 * T * H, pa_p + b0 * T * H,
                    g_p + b0 * T * H, rec_p + b0 * H, x_p + b0 * T * C, &kernel_g[0, 0, 0],
                    &recurrent_kernel_g[0, 0, 0], &bias[0], dp_p + b0 * C, rdp_p + b0 * H,
                    xm_p + b0 * T * C, hm_p + b0 * H, nb, T, C, H, B, activation, go_backwards,
                    return_sequences)
                _join_watch(was)
    _unwatch(watched)


def simple_rnn_backward_rdrop(floating[:, :, ::1] dx,  # OUT
                              floating[:, ::1] dh0,  # OUT
                              floating[:, ::1] dkernel,  # IN/OUT (+=)
                              floating[:, ::1] drecurrent_kernel,  # IN/OUT (+=)
                              floating[::1] dbias,  # IN/OUT (+=)
                              floating[:, :, ::1] dgates,  # SCRATCH
                              floating[:, ::1] dgates_t,  # SCRATCH
                              floating[::1] dw,  # SCRATCH (unused here)
                              const floating[:, :, ::1] dy,  # IN
                              const floating[:, ::1] dh_n,  # IN (may alias dh0)
                              const floating[:, :, ::1] h_tm1_seq,  # IN (saved)
                              const floating[:, :, ::1] preact,  # IN (saved)
                              const floating[:, :, ::1] gates,  # IN (saved)
                              const floating[:, :, ::1] x,  # IN
                              const floating[:, :, ::1] kernel_g,  # IN (K, C, H)
                              const floating[:, :, ::1] recurrent_kernel_g,  # IN (K, H, H)
                              const floating[:, :, ::1] dp,  # IN (K, B, C)
                              const floating[:, :, ::1] rdp,  # IN (K, B, H)
                              floating[:, ::1] xm,  # SCRATCH (B*T, C)
                              floating[:, ::1] pm,  # SCRATCH (unused here)
                              floating[:, ::1] hm,  # SCRATCH (B, H)
                              floating[:, ::1] recg,  # SCRATCH (unused here)
                              floating[:, ::1] hseq,  # SCRATCH (B*T, H)
                              Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                              int activation, bint go_backwards, bint return_sequences):
    """SimpleRNN backward with recurrent dropout; see rnnengine/kernels/__init__.py."""
    if RNNENGINE_BOUNDSCHECK:
        _check_backward(dx.shape, dh0.shape, dkernel.shape, drecurrent_kernel.shape, dgates.shape,
                        dgates_t.shape, dw.shape, dy.shape, dh_n.shape, hseq.shape, B, T, C, H, 1,
                        return_sequences)
        _check_common(dy.shape, dh_n.shape, h_tm1_seq.shape, preact.shape, gates.shape,
                      dgates_t.shape, x.shape, kernel_g.shape, recurrent_kernel_g.shape, dp.shape,
                      rdp.shape, xm.shape, pm.shape, hm.shape, recg.shape, B, T, C, H, 1,
                      return_sequences)
        _expect_shape("dbias", dbias.shape, 1, H)
    cdef Py_ssize_t T_out = T if return_sequences else 1
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
    cdef const floating* x_p = &x[0, 0, 0]
    cdef const floating* htm1_p = &h_tm1_seq[0, 0, 0]
    cdef const floating* k_p = &kernel_g[0, 0, 0]
    cdef const floating* rk_p = &recurrent_kernel_g[0, 0, 0]
    cdef const floating* dp_p = &dp[0, 0, 0]
    cdef const floating* rdp_p = &rdp[0, 0, 0]
    cdef floating* xm_p = &xm[0, 0]
    cdef floating* hm_p = &hm[0, 0]
    cdef floating* hs_p = &hseq[0, 0]
    cdef int watched = _watch(B * T * (C + H) * H)
    cdef int was
    with nogil:
        if n == 1:
            _simple_rnn_backward_rdrop_rows(dx_p, dh0_p, dg_p, dgt_p, dy_p, dhn_p, pa_p, g_p, k_p, rk_p,
                                            dp_p, rdp_p, xm_p, hm_p, B, T, C, H, B, activation,
                                            go_backwards, return_sequences)
        else:
            for i in prange(n, schedule='static', num_threads=n):
                was = _join_watch(watched)
                b0 = i * B // n
                nb = (i + 1) * B // n - b0
                _simple_rnn_backward_rdrop_rows(
                    dx_p + b0 * T * C, dh0_p + b0 * H, dg_p + b0 * T * H, dgt_p + b0 * H,
                    dy_p + b0 * T_out * H, dhn_p + b0 * H, pa_p + b0 * T * H, g_p + b0 * T * H,
                    k_p, rk_p, dp_p + b0 * C, rdp_p + b0 * H, xm_p + b0 * T * C, hm_p + b0 * H,
                    nb, T, C, H, B, activation, go_backwards, return_sequences)
                _join_watch(was)
        # dkernel += (x * dp)^T @ dgates, drecurrent_kernel += (h_tm1 * rdp)^T @ dgates,
        # dbias += dgates summed over (b, t)
        _mask_rows(xm_p, x_p, dp_p, B, T, C)
        _weight_grad(&dkernel[0, 0], H, &dbias[0], xm_p, C, dg_p, H, B * T, H, n_cols)
        _mask_rows(hs_p, htm1_p, rdp_p, B, T, H)
        _weight_grad(&drecurrent_kernel[0, 0], H, NULL, hs_p, H, dg_p, H, B * T, H, n_cols)
    _unwatch(watched)


# -- LSTM -----------------------------------------------------------------------------------

cdef void _lstm_forward_train_rdrop(floating* y_out, floating* h, floating* c,
                                    floating* h_tm1_seq, floating* c_tm1_seq, floating* preact,
                                    floating* gates, floating* rec, const floating* x,
                                    const floating* kernel_g, const floating* recurrent_kernel_g,
                                    const floating* bias, const floating* dp, const floating* rdp,
                                    floating* xm, floating* hm, Py_ssize_t B, Py_ssize_t T,
                                    Py_ssize_t C, Py_ssize_t H, Py_ssize_t mB, int activation,
                                    int recurrent_activation, bint go_backwards,
                                    bint return_sequences) noexcept nogil:
    # _lstm_forward_train with gate g's pre-activation
    # (x * dp[g]) @ W_g + b_g + (h_tm1 * rdp[g]) @ U_g
    cdef Py_ssize_t G = 4 * H
    cdef Py_ssize_t s, t, b, j
    cdef floating* z
    cdef floating* pa
    cdef floating* hb
    cdef floating* cb
    _masked_projection(preact, x, dp, kernel_g, xm, B, T, C, H, 4, mB)
    for s in range(T):
        if _stopped():  # SIGINT: the driver raises KeyboardInterrupt
            break
        t = T - 1 - s if go_backwards else s
        _masked_recurrent(rec, h, rdp, recurrent_kernel_g, hm, B, H, G, 0, 4, mB)
        for b in range(B):
            z = rec + b * G
            pa = preact + (b * T + t) * G
            hb = h + b * H
            cb = c + b * H
            memcpy(h_tm1_seq + (b * T + t) * H, hb, H * sizeof(floating))
            memcpy(c_tm1_seq + (b * T + t) * H, cb, H * sizeof(floating))
            for j in range(G):
                z[j] = pa[j] + bias[j] + z[j]
                pa[j] = z[j]
            activate_block(z, 2 * H, recurrent_activation)  # i, f
            activate_block(z + 2 * H, H, activation)  # g = act(zc)
            activate_block(z + 3 * H, H, recurrent_activation)  # o
            memcpy(gates + (b * T + t) * G, z, G * sizeof(floating))
            for j in range(H):
                cb[j] = z[H + j] * cb[j] + z[j] * z[2 * H + j]  # c = f * c_tm1 + i * g
                hb[j] = cb[j]
            activate_block(hb, H, activation)
            for j in range(H):
                hb[j] = z[3 * H + j] * hb[j]  # h = o * act(c)
        _write_output(y_out, h, B, T, H, s, return_sequences)


cdef void _lstm_backward_rdrop_rows(floating* dx, floating* dh0, floating* dc0,
                                    floating* dgates, floating* dgates_t, const floating* dy,
                                    const floating* dh_n, const floating* dc_n,
                                    const floating* c_tm1_seq, const floating* preact,
                                    const floating* gates, const floating* kernel_g,
                                    const floating* recurrent_kernel_g, const floating* dp,
                                    const floating* rdp, floating* xm, floating* hm,
                                    Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                                    Py_ssize_t mB, int activation, int recurrent_activation,
                                    bint go_backwards, bint return_sequences) noexcept nogil:
    # The per-row part of the backward for B rows (as _lstm_backward_rows in
    # _lstm.pyx, with the masked products).
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
    apply_grad_rows(dgates, preact, gates, B * T, G, 0, 2 * H, recurrent_activation)
    apply_grad_rows(dgates, preact, gates, B * T, G, 2 * H, 3 * H, activation)
    apply_grad_rows(dgates, preact, gates, B * T, G, 3 * H, G, recurrent_activation)
    _init_dh(dh0, dh_n, dy, B, H, return_sequences)
    for b in range(B):
        for j in range(H):
            dc0[b * H + j] = dc_n[b * H + j]
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
            if return_sequences:
                dyb = dy + (b * T_out + s) * H
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
                d_o = d_h * act_c  # forward: h = o * act(c)
                d_c = dc[j] + d_h * o * w[2 * H + j]
                dc[j] = d_c * f  # forward: c = f * c_tm1 + i * g
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
                dh[j] = 0  # h_tm1 reaches this step only through the masked products
        _masked_recurrent_grad(dh0, dgates_t, rdp, recurrent_kernel_g, hm, B, H, G, 0, 4, mB)
    _masked_input_grad(dx, dgates, dp, kernel_g, xm, B, T, C, H, 4, mB)


def lstm_forward_train_rdrop(floating[:, :, ::1] y_out,  # OUT
                             floating[:, ::1] h,  # IN/OUT
                             floating[:, ::1] c,  # IN/OUT
                             floating[:, :, ::1] h_tm1_seq,  # OUT (saved)
                             floating[:, :, ::1] c_tm1_seq,  # OUT (saved)
                             floating[:, :, ::1] preact,  # OUT (saved)
                             floating[:, :, ::1] gates,  # OUT (saved)
                             floating[:, ::1] rec,  # SCRATCH
                             const floating[:, :, ::1] x,  # IN
                             const floating[:, :, ::1] kernel_g,  # IN (4, C, H)
                             const floating[:, :, ::1] recurrent_kernel_g,  # IN (4, H, H)
                             const floating[::1] bias,  # IN
                             const floating[:, :, ::1] dp,  # IN (4, B, C)
                             const floating[:, :, ::1] rdp,  # IN (4, B, H)
                             floating[:, ::1] xm,  # SCRATCH (B*T, C)
                             floating[:, ::1] pm,  # SCRATCH (unused here)
                             floating[:, ::1] hm,  # SCRATCH (B, H)
                             floating[:, ::1] recg,  # SCRATCH (unused here)
                             Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                             int activation, int recurrent_activation, bint go_backwards,
                             bint return_sequences):
    """LSTM forward_train with recurrent dropout; see rnnengine/kernels/__init__.py."""
    if RNNENGINE_BOUNDSCHECK:
        _check_common(y_out.shape, h.shape, h_tm1_seq.shape, preact.shape, gates.shape, rec.shape,
                      x.shape, kernel_g.shape, recurrent_kernel_g.shape, dp.shape, rdp.shape,
                      xm.shape, pm.shape, hm.shape, recg.shape, B, T, C, H, 4, return_sequences)
        _expect_shape("c", c.shape, 2, B, H)
        _expect_shape("c_tm1_seq", c_tm1_seq.shape, 3, B, T, H)
        _expect_shape("bias", bias.shape, 1, 4 * H)
    cdef Py_ssize_t G = 4 * H
    cdef Py_ssize_t T_out = T if return_sequences else 1
    cdef int n = _batch_threads(B, B * T * (C + H) * G)
    cdef Py_ssize_t i, b0, nb
    cdef floating* y_p = &y_out[0, 0, 0]
    cdef floating* h_p = &h[0, 0]
    cdef floating* c_p = &c[0, 0]
    cdef floating* htm1_p = &h_tm1_seq[0, 0, 0]
    cdef floating* ctm1_p = &c_tm1_seq[0, 0, 0]
    cdef floating* pa_p = &preact[0, 0, 0]
    cdef floating* g_p = &gates[0, 0, 0]
    cdef floating* rec_p = &rec[0, 0]
    cdef const floating* x_p = &x[0, 0, 0]
    cdef const floating* k_p = &kernel_g[0, 0, 0]
    cdef const floating* rk_p = &recurrent_kernel_g[0, 0, 0]
    cdef const floating* b_p = &bias[0]
    cdef const floating* dp_p = &dp[0, 0, 0]
    cdef const floating* rdp_p = &rdp[0, 0, 0]
    cdef floating* xm_p = &xm[0, 0]
    cdef floating* hm_p = &hm[0, 0]
    cdef int watched = _watch(B * T * (C + H) * G)
    cdef int was
    with nogil:
        if n == 1:
            _lstm_forward_train_rdrop(y_p, h_p, c_p, htm1_p, ctm1_p, pa_p, g_p, rec_p, x_p, k_p, rk_p,
                                      b_p, dp_p, rdp_p, xm_p, hm_p, B, T, C, H, B, activation,
                                      recurrent_activation, go_backwards, return_sequences)
        else:
            for i in prange(n, schedule='static', num_threads=n):
                was = _join_watch(watched)
                b0 = i * B // n
                nb = (i + 1) * B // n - b0
                _lstm_forward_train_rdrop(
                    y_p + b0 * T_out * H, h_p + b0 * H, c_p + b0 * H, htm1_p + b0 * T * H,
                    ctm1_p + b0 * T * H, pa_p + b0 * T * G, g_p + b0 * T * G, rec_p + b0 * G,
                    x_p + b0 * T * C, k_p, rk_p, b_p, dp_p + b0 * C, rdp_p + b0 * H,
                    xm_p + b0 * T * C, hm_p + b0 * H, nb, T, C, H, B, activation,
                    recurrent_activation, go_backwards, return_sequences)
                _join_watch(was)
    _unwatch(watched)


def lstm_backward_rdrop(floating[:, :, ::1] dx,  # OUT
                        floating[:, ::1] dh0,  # OUT
                        floating[:, ::1] dc0,  # OUT
                        floating[:, ::1] dkernel,  # IN/OUT (+=)
                        floating[:, ::1] drecurrent_kernel,  # IN/OUT (+=)
                        floating[::1] dbias,  # IN/OUT (+=)
                        floating[:, :, ::1] dgates,  # SCRATCH
                        floating[:, ::1] dgates_t,  # SCRATCH
                        floating[::1] dw,  # SCRATCH (unused here)
                        const floating[:, :, ::1] dy,  # IN
                        const floating[:, ::1] dh_n,  # IN (may alias dh0)
                        const floating[:, ::1] dc_n,  # IN (may alias dc0)
                        const floating[:, :, ::1] h_tm1_seq,  # IN (saved)
                        const floating[:, :, ::1] c_tm1_seq,  # IN (saved)
                        const floating[:, :, ::1] preact,  # IN (saved)
                        const floating[:, :, ::1] gates,  # IN (saved)
                        const floating[:, :, ::1] x,  # IN
                        const floating[:, :, ::1] kernel_g,  # IN (4, C, H)
                        const floating[:, :, ::1] recurrent_kernel_g,  # IN (4, H, H)
                        const floating[:, :, ::1] dp,  # IN (4, B, C)
                        const floating[:, :, ::1] rdp,  # IN (4, B, H)
                        floating[:, ::1] xm,  # SCRATCH (B*T, C)
                        floating[:, ::1] pm,  # SCRATCH (unused here)
                        floating[:, ::1] hm,  # SCRATCH (B, H)
                        floating[:, ::1] recg,  # SCRATCH (unused here)
                        floating[:, ::1] hseq,  # SCRATCH (B*T, H)
                        Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                        int activation, int recurrent_activation, bint go_backwards,
                        bint return_sequences):
    """LSTM backward with recurrent dropout; see rnnengine/kernels/__init__.py."""
    if RNNENGINE_BOUNDSCHECK:
        _check_backward(dx.shape, dh0.shape, dkernel.shape, drecurrent_kernel.shape, dgates.shape,
                        dgates_t.shape, dw.shape, dy.shape, dh_n.shape, hseq.shape, B, T, C, H, 4,
                        return_sequences)
        _check_common(dy.shape, dh_n.shape, h_tm1_seq.shape, preact.shape, gates.shape,
                      dgates_t.shape, x.shape, kernel_g.shape, recurrent_kernel_g.shape, dp.shape,
                      rdp.shape, xm.shape, pm.shape, hm.shape, recg.shape, B, T, C, H, 4,
                      return_sequences)
        _expect_shape("dc0", dc0.shape, 2, B, H)
        _expect_shape("dc_n", dc_n.shape, 2, B, H)
        _expect_shape("c_tm1_seq", c_tm1_seq.shape, 3, B, T, H)
        _expect_shape("dbias", dbias.shape, 1, 4 * H)
    cdef Py_ssize_t G = 4 * H
    cdef Py_ssize_t T_out = T if return_sequences else 1
    cdef int n = 1 if _det() else _batch_threads(B, B * T * (C + H) * G)
    cdef int n_cols = n if n < H else <int>H
    cdef Py_ssize_t i, b0, nb, g
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
    cdef const floating* k_p = &kernel_g[0, 0, 0]
    cdef const floating* rk_p = &recurrent_kernel_g[0, 0, 0]
    cdef const floating* dp_p = &dp[0, 0, 0]
    cdef const floating* rdp_p = &rdp[0, 0, 0]
    cdef floating* xm_p = &xm[0, 0]
    cdef floating* hm_p = &hm[0, 0]
    cdef floating* hs_p = &hseq[0, 0]
    cdef int watched = _watch(B * T * (C + H) * G)
    cdef int was
    with nogil:
        if n == 1:
            _lstm_backward_rdrop_rows(dx_p, dh0_p, dc0_p, dg_p, dgt_p, dy_p, dhn_p, dcn_p, ctm1_p, pa_p,
                                      g_p, k_p, rk_p, dp_p, rdp_p, xm_p, hm_p, B, T, C, H, B, activation,
                                      recurrent_activation, go_backwards, return_sequences)
        else:
            for i in prange(n, schedule='static', num_threads=n):
                was = _join_watch(watched)
                b0 = i * B // n
                nb = (i + 1) * B // n - b0
                _lstm_backward_rdrop_rows(
                    dx_p + b0 * T * C, dh0_p + b0 * H, dc0_p + b0 * H, dg_p + b0 * T * G,
                    dgt_p + b0 * G, dy_p + b0 * T_out * H, dhn_p + b0 * H, dcn_p + b0 * H,
                    ctm1_p + b0 * T * H, pa_p + b0 * T * G, g_p + b0 * T * G, k_p, rk_p,
                    dp_p + b0 * C, rdp_p + b0 * H, xm_p + b0 * T * C, hm_p + b0 * H, nb, T, C, H, B,
                    activation, recurrent_activation, go_backwards, return_sequences)
                _join_watch(was)
        for g in range(4):
            # dkernel[:, gate g] += (x * dp[g])^T @ dgates_g, dbias likewise;
            # drecurrent_kernel[:, gate g] += (h_tm1 * rdp[g])^T @ dgates_g
            _mask_rows(xm_p, x_p, dp_p + g * B * C, B, T, C)
            _weight_grad(dk_p + g * H, G, db_p + g * H, xm_p, C, dg_p + g * H, G, B * T, H, n_cols)
            _mask_rows(hs_p, htm1_p, rdp_p + g * B * H, B, T, H)
            _weight_grad(drk_p + g * H, G, NULL, hs_p, H, dg_p + g * H, G, B * T, H, n_cols)
    _unwatch(watched)


# -- GRU ------------------------------------------------------------------------------------

cdef void _gru_forward_train_rdrop(floating* y_out, floating* h, floating* h_tm1_seq,
                                   floating* preact, floating* gates, floating* hh_rec_seq,
                                   floating* rec, floating* rec_h, floating* rh,
                                   const floating* x, const floating* kernel_g,
                                   const floating* recurrent_kernel_g,
                                   const floating* input_bias, const floating* recurrent_bias,
                                   const floating* dp, const floating* rdp, floating* xm,
                                   floating* hm, Py_ssize_t B, Py_ssize_t T, Py_ssize_t C,
                                   Py_ssize_t H, Py_ssize_t mB, int activation,
                                   int recurrent_activation, bint go_backwards,
                                   bint return_sequences, bint reset_after) noexcept nogil:
    # _gru_forward_train with masks: gate g reads x * dp[g] and h_tm1 * rdp[g];
    # without reset_after, the candidate's product is (r * (h_tm1 * rdp[2])) @ U_h.
    cdef Py_ssize_t G = 3 * H
    cdef Py_ssize_t s, t, b, j, bt
    cdef floating* z
    cdef floating* pa
    cdef floating* hb
    cdef floating* hr
    cdef floating* hh
    cdef const floating* m2
    _masked_projection(preact, x, dp, kernel_g, xm, B, T, C, H, 3, mB)
    for s in range(T):
        if _stopped():  # SIGINT: the driver raises KeyboardInterrupt
            break
        t = T - 1 - s if go_backwards else s
        if reset_after:
            _masked_recurrent(rec, h, rdp, recurrent_kernel_g, hm, B, H, G, 0, 3, mB)
            for b in range(B):
                bt = b * T + t
                z = rec + b * G
                pa = preact + bt * G
                hb = h + b * H
                hr = hh_rec_seq + bt * H
                memcpy(h_tm1_seq + bt * H, hb, H * sizeof(floating))
                for j in range(2 * H):
                    z[j] = pa[j] + input_bias[j] + z[j] + recurrent_bias[j]
                    pa[j] = z[j]
                activate_block(z, 2 * H, recurrent_activation)  # z, r
                # a_h = x_h + input_bias_h + r * hh_rec, hh_rec = (h_tm1 * rdp[2]) @ U_h + rb_h
                for j in range(H):
                    hr[j] = z[2 * H + j] + recurrent_bias[2 * H + j]
                    z[2 * H + j] = pa[2 * H + j] + input_bias[2 * H + j] + z[H + j] * hr[j]
                    pa[2 * H + j] = z[2 * H + j]
                activate_block(z + 2 * H, H, activation)
                memcpy(gates + bt * G, z, G * sizeof(floating))
                for j in range(H):
                    hb[j] = z[j] * hb[j] + (1 - z[j]) * z[2 * H + j]
        else:
            _masked_recurrent(rec, h, rdp, recurrent_kernel_g, hm, B, H, G, 0, 2, mB)
            for b in range(B):
                bt = b * T + t
                z = rec + b * G
                pa = preact + bt * G
                hb = h + b * H
                m2 = rdp + 2 * mB * H + b * H
                memcpy(h_tm1_seq + bt * H, hb, H * sizeof(floating))
                for j in range(2 * H):
                    z[j] = pa[j] + input_bias[j] + z[j]
                    pa[j] = z[j]
                activate_block(z, 2 * H, recurrent_activation)  # z, r
                memcpy(gates + bt * G, z, 2 * H * sizeof(floating))
                for j in range(H):
                    rh[b * H + j] = z[H + j] * (hb[j] * m2[j])
                memcpy(hh_rec_seq + bt * H, rh + b * H, H * sizeof(floating))
            # rec_h[:] = rh @ U_h
            _recurrent_product(rec_h, rh, recurrent_kernel_g + 2 * H * H, <int>B, <int>H, <int>H,
                               <int>H, <int>H)
            for b in range(B):
                bt = b * T + t
                z = rec + b * G
                pa = preact + bt * G
                hb = h + b * H
                hh = rec_h + b * H
                for j in range(H):
                    hh[j] = pa[2 * H + j] + input_bias[2 * H + j] + hh[j]
                    pa[2 * H + j] = hh[j]
                activate_block(hh, H, activation)
                memcpy(gates + bt * G + 2 * H, hh, H * sizeof(floating))
                for j in range(H):
                    hb[j] = z[j] * hb[j] + (1 - z[j]) * hh[j]
        _write_output(y_out, h, B, T, H, s, return_sequences)


cdef void _gru_backward_rdrop_rows(floating* dx, floating* dh0, floating* dgates,
                                   floating* dhh_rec_seq, floating* dgates_t, floating* dh_rec,
                                   floating* dhh_t, const floating* dy, const floating* dh_n,
                                   const floating* h_tm1_seq, const floating* preact,
                                   const floating* gates, const floating* hh_rec_seq,
                                   const floating* kernel_g, const floating* recurrent_kernel_g,
                                   const floating* dp, const floating* rdp, floating* xm,
                                   floating* hm, Py_ssize_t B, Py_ssize_t T, Py_ssize_t C,
                                   Py_ssize_t H, Py_ssize_t mB, int activation,
                                   int recurrent_activation, bint go_backwards,
                                   bint return_sequences, bint reset_after) noexcept nogil:
    # The per-row part of the backward for B rows (as numba_rdrop._gru_backward_rdrop's
    # time loop and dx).
    cdef Py_ssize_t G = 3 * H
    cdef Py_ssize_t T_out = T if return_sequences else 1
    cdef Py_ssize_t s, t, b, j, bt
    cdef floating d_h, z, hh, r, dz, dhh, da_h, da_z, dr, da_r, dhh_rec, drh, m
    cdef floating* dh
    cdef floating* dg
    cdef floating* w
    cdef floating* dhr
    cdef const floating* gt
    cdef const floating* ht
    cdef const floating* hr
    cdef const floating* dyb
    cdef const floating* m2
    apply_grad_rows(dgates, preact, gates, B * T, G, 0, 2 * H, recurrent_activation)
    apply_grad_rows(dgates, preact, gates, B * T, G, 2 * H, G, activation)
    _init_dh(dh0, dh_n, dy, B, H, return_sequences)
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
            if return_sequences:
                dyb = dy + (b * T_out + s) * H
                for j in range(H):
                    dh[j] += dyb[j]
            for j in range(H):
                d_h = dh[j]
                z = gt[j]
                hh = gt[2 * H + j]
                # forward: h = z * h_tm1 + (1 - z) * hh (h_tm1 unmasked)
                dz = d_h * (ht[j] - hh)
                dhh = d_h * (1 - z)
                dh[j] = d_h * z
                da_h = dhh * dg[2 * H + j]
                da_z = dz * dg[j]
                dg[j] = da_z
                dg[2 * H + j] = da_h
                w[j] = da_z
                if reset_after:
                    # forward: a_h = x_h + input_bias_h + r * hh_rec, hh_rec = (h_tm1 * rdp[2]) @ U_h + rb_h
                    r = gt[H + j]
                    dr = da_h * hr[j]
                    dhh_rec = da_h * r
                    da_r = dr * dg[H + j]
                    dg[H + j] = da_r
                    w[H + j] = da_r
                    w[2 * H + j] = dhh_rec
                    dhr[j] = dhh_rec
                else:
                    dhh_t[b * H + j] = da_h
                    dhr[j] = da_h
        if reset_after:
            _masked_recurrent_grad(dh0, dgates_t, rdp, recurrent_kernel_g, hm, B, H, G, 0, 3, mB)
        else:
            # forward: a_h = x_h + input_bias_h + rh @ U_h, rh = r * (h_tm1 * rdp[2])
            _gemm(NoTrans, Trans, <int>B, <int>H, <int>H, 1, dhh_t, <int>H,
                  recurrent_kernel_g + 2 * H * H, <int>H, 0, dh_rec, <int>H)
            for b in range(B):
                bt = b * T + t
                dh = dh0 + b * H
                dg = dgates + bt * G
                gt = gates + bt * G
                ht = h_tm1_seq + bt * H
                w = dgates_t + b * G
                m2 = rdp + 2 * mB * H + b * H
                for j in range(H):
                    r = gt[H + j]
                    m = m2[j]
                    drh = dh_rec[b * H + j]
                    dr = drh * ht[j] * m
                    dh[j] += drh * r * m
                    da_r = dr * dg[H + j]
                    dg[H + j] = da_r
                    w[H + j] = da_r
            _masked_recurrent_grad(dh0, dgates_t, rdp, recurrent_kernel_g, hm, B, H, G, 0, 2, mB)
    _masked_input_grad(dx, dgates, dp, kernel_g, xm, B, T, C, H, 3, mB)


def gru_forward_train_rdrop(floating[:, :, ::1] y_out,  # OUT
                            floating[:, ::1] h,  # IN/OUT
                            floating[:, :, ::1] h_tm1_seq,  # OUT (saved)
                            floating[:, :, ::1] preact,  # OUT (saved)
                            floating[:, :, ::1] gates,  # OUT (saved)
                            floating[:, :, ::1] hh_rec_seq,  # OUT (saved)
                            floating[:, ::1] rec,  # SCRATCH
                            floating[:, ::1] rec_h,  # SCRATCH
                            floating[:, ::1] rh,  # SCRATCH
                            const floating[:, :, ::1] x,  # IN
                            const floating[:, :, ::1] kernel_g,  # IN (3, C, H)
                            const floating[:, :, ::1] recurrent_kernel_g,  # IN (3, H, H)
                            const floating[::1] input_bias,  # IN
                            const floating[::1] recurrent_bias,  # IN
                            const floating[:, :, ::1] dp,  # IN (3, B, C)
                            const floating[:, :, ::1] rdp,  # IN (3, B, H)
                            floating[:, ::1] xm,  # SCRATCH (B*T, C)
                            floating[:, ::1] pm,  # SCRATCH (unused here)
                            floating[:, ::1] hm,  # SCRATCH (B, H)
                            floating[:, ::1] recg,  # SCRATCH (unused here)
                            Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                            int activation, int recurrent_activation, bint go_backwards,
                            bint return_sequences, bint reset_after):
    """GRU forward_train with recurrent dropout; see rnnengine/kernels/__init__.py."""
    if RNNENGINE_BOUNDSCHECK:
        _check_common(y_out.shape, h.shape, h_tm1_seq.shape, preact.shape, gates.shape, rec.shape,
                      x.shape, kernel_g.shape, recurrent_kernel_g.shape, dp.shape, rdp.shape,
                      xm.shape, pm.shape, hm.shape, recg.shape, B, T, C, H, 3, return_sequences)
        _expect_shape("hh_rec_seq", hh_rec_seq.shape, 3, B, T, H)
        _expect_shape("rec_h", rec_h.shape, 2, B, H)
        _expect_shape("rh", rh.shape, 2, B, H)
        _expect_shape("input_bias", input_bias.shape, 1, 3 * H)
        _expect_shape("recurrent_bias", recurrent_bias.shape, 1, 3 * H)
    cdef Py_ssize_t G = 3 * H
    cdef Py_ssize_t T_out = T if return_sequences else 1
    cdef int n = _batch_threads(B, B * T * (C + H) * G)
    cdef Py_ssize_t i, b0, nb
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
    cdef const floating* k_p = &kernel_g[0, 0, 0]
    cdef const floating* rk_p = &recurrent_kernel_g[0, 0, 0]
    cdef const floating* ib_p = &input_bias[0]
    cdef const floating* rb_p = &recurrent_bias[0]
    cdef const floating* dp_p = &dp[0, 0, 0]
    cdef const floating* rdp_p = &rdp[0, 0, 0]
    cdef floating* xm_p = &xm[0, 0]
    cdef floating* hm_p = &hm[0, 0]
    cdef int watched = _watch(B * T * (C + H) * G)
    cdef int was
    with nogil:
        if n == 1:
            _gru_forward_train_rdrop(y_p, h_p, htm1_p, pa_p, g_p, hr_p, rec_p, rech_p, rh_p, x_p, k_p,
                                     rk_p, ib_p, rb_p, dp_p, rdp_p, xm_p, hm_p, B, T, C, H, B,
                                     activation, recurrent_activation, go_backwards, return_sequences,
                                     reset_after)
        else:
            for i in prange(n, schedule='static', num_threads=n):
                was = _join_watch(watched)
                b0 = i * B // n
                nb = (i + 1) * B // n - b0
                _gru_forward_train_rdrop(
                    y_p + b0 * T_out * H, h_p + b0 * H, htm1_p + b0 * T * H, pa_p + b0 * T * G,
                    g_p + b0 * T * G, hr_p + b0 * T * H, rec_p + b0 * G, rech_p + b0 * H,
                    rh_p + b0 * H, x_p + b0 * T * C, k_p, rk_p, ib_p, rb_p, dp_p + b0 * C,
                    rdp_p + b0 * H, xm_p + b0 * T * C, hm_p + b0 * H, nb, T, C, H, B, activation,
                    recurrent_activation, go_backwards, return_sequences, reset_after)
                _join_watch(was)
    _unwatch(watched)


def gru_backward_rdrop(floating[:, :, ::1] dx,  # OUT
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
                       floating[::1] dw,  # SCRATCH (unused here)
                       const floating[:, :, ::1] dy,  # IN
                       const floating[:, ::1] dh_n,  # IN (may alias dh0)
                       const floating[:, :, ::1] h_tm1_seq,  # IN (saved)
                       const floating[:, :, ::1] preact,  # IN (saved)
                       const floating[:, :, ::1] gates,  # IN (saved)
                       const floating[:, :, ::1] hh_rec_seq,  # IN (saved)
                       const floating[:, :, ::1] x,  # IN
                       const floating[:, :, ::1] kernel_g,  # IN (3, C, H)
                       const floating[:, :, ::1] recurrent_kernel_g,  # IN (3, H, H)
                       const floating[:, :, ::1] dp,  # IN (3, B, C)
                       const floating[:, :, ::1] rdp,  # IN (3, B, H)
                       floating[:, ::1] xm,  # SCRATCH (B*T, C)
                       floating[:, ::1] pm,  # SCRATCH (unused here)
                       floating[:, ::1] hm,  # SCRATCH (B, H)
                       floating[:, ::1] recg,  # SCRATCH (unused here)
                       floating[:, ::1] hseq,  # SCRATCH (B*T, H)
                       Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                       int activation, int recurrent_activation, bint go_backwards,
                       bint return_sequences, bint reset_after):
    """GRU backward with recurrent dropout; see rnnengine/kernels/__init__.py."""
    if RNNENGINE_BOUNDSCHECK:
        _check_backward(dx.shape, dh0.shape, dkernel.shape, drecurrent_kernel.shape, dgates.shape,
                        dgates_t.shape, dw.shape, dy.shape, dh_n.shape, hseq.shape, B, T, C, H, 3,
                        return_sequences)
        _check_common(dy.shape, dh_n.shape, h_tm1_seq.shape, preact.shape, gates.shape,
                      dgates_t.shape, x.shape, kernel_g.shape, recurrent_kernel_g.shape, dp.shape,
                      rdp.shape, xm.shape, pm.shape, hm.shape, recg.shape, B, T, C, H, 3,
                      return_sequences)
        _expect_shape("dinput_bias", dinput_bias.shape, 1, 3 * H)
        _expect_shape("drecurrent_bias", drecurrent_bias.shape, 1, 3 * H)
        _expect_shape("dhh_rec_seq", dhh_rec_seq.shape, 3, B, T, H)
        _expect_shape("dh_rec", dh_rec.shape, 2, B, H)
        _expect_shape("dhh_t", dhh_t.shape, 2, B, H)
        _expect_shape("hh_rec_seq", hh_rec_seq.shape, 3, B, T, H)
    cdef Py_ssize_t G = 3 * H
    cdef Py_ssize_t T_out = T if return_sequences else 1
    cdef int n = 1 if _det() else _batch_threads(B, B * T * (C + H) * G)
    cdef int n_cols = n if n < H else <int>H
    cdef Py_ssize_t i, b0, nb, g
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
    cdef const floating* k_p = &kernel_g[0, 0, 0]
    cdef const floating* rk_p = &recurrent_kernel_g[0, 0, 0]
    cdef const floating* dp_p = &dp[0, 0, 0]
    cdef const floating* rdp_p = &rdp[0, 0, 0]
    cdef floating* xm_p = &xm[0, 0]
    cdef floating* hm_p = &hm[0, 0]
    cdef floating* hs_p = &hseq[0, 0]
    cdef floating* bias_p
    cdef int watched = _watch(B * T * (C + H) * G)
    cdef int was
    with nogil:
        if n == 1:
            _gru_backward_rdrop_rows(dx_p, dh0_p, dg_p, dhr_p, dgt_p, dhrec_p, dhht_p, dy_p, dhn_p, htm1_p,
                                     pa_p, g_p, hr_p, k_p, rk_p, dp_p, rdp_p, xm_p, hm_p, B, T, C, H, B,
                                     activation, recurrent_activation, go_backwards, return_sequences,
                                     reset_after)
        else:
            for i in prange(n, schedule='static', num_threads=n):
                was = _join_watch(watched)
                b0 = i * B // n
                nb = (i + 1) * B // n - b0
                _gru_backward_rdrop_rows(
                    dx_p + b0 * T * C, dh0_p + b0 * H, dg_p + b0 * T * G, dhr_p + b0 * T * H,
                    dgt_p + b0 * G, dhrec_p + b0 * H, dhht_p + b0 * H, dy_p + b0 * T_out * H,
                    dhn_p + b0 * H, htm1_p + b0 * T * H, pa_p + b0 * T * G, g_p + b0 * T * G,
                    hr_p + b0 * T * H, k_p, rk_p, dp_p + b0 * C, rdp_p + b0 * H,
                    xm_p + b0 * T * C, hm_p + b0 * H, nb, T, C, H, B, activation,
                    recurrent_activation, go_backwards, return_sequences, reset_after)
                _join_watch(was)
        for g in range(3):
            # dkernel[:, gate g] += (x * dp[g])^T @ dgates_g, dinput_bias likewise
            _mask_rows(xm_p, x_p, dp_p + g * B * C, B, T, C)
            _weight_grad(dk_p + g * H, G, dib_p + g * H, xm_p, C, dg_p + g * H, G, B * T, H, n_cols)
        for g in range(3):
            if g == 2 and not reset_after:
                break
            # drecurrent_kernel[:, gate g] += (h_tm1 * rdp[g])^T @ d(rec_g), with
            # d(rec_g) the z and r blocks of dgates, and the candidate's dhh_rec_seq
            # (reset_after); drecurrent_bias likewise with reset_after
            _mask_rows(hs_p, htm1_p, rdp_p + g * B * H, B, T, H)
            if g < 2:
                bias_p = NULL
                if reset_after:
                    bias_p = drb_p + g * H
                _weight_grad(drk_p + g * H, G, bias_p, hs_p, H, dg_p + g * H, G, B * T, H, n_cols)
            else:
                _weight_grad(drk_p + g * H, G, drb_p + g * H, hs_p, H, dhr_p, H, B * T, H, n_cols)
        if not reset_after:
            # the candidate's operand rh = r * h_tm1 * rdp[2] is saved whole in hh_rec_seq
            _weight_grad(drk_p + 2 * H, G, NULL, hr_p, H, dhr_p, H, B * T, H, n_cols)
    _unwatch(watched)


# -- thread settings (rnnengine.kernels sets every module's) -------------------------------

def set_num_threads(int n):
    """Threads one call of this module's kernels may split its batch over
    (src/_gates.pxd); rnnengine.config.set_num_threads sets it for every module."""
    _set_gate_threads(n)


def get_num_threads():
    return rnnengine_gate_threads


def set_min_work_to_split(long long n):
    """Multiply-adds from which a call of this module splits its batch over threads
    (src/_gates.pxd); rnnengine.kernels._set_min_work_to_split sets every module's."""
    _set_min_work(n)


def get_min_work_to_split():
    return rnnengine_min_work
