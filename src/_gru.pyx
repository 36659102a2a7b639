# cython: language_level=3
# GRU forward kernel in Cython (both reset_after variants), compiled into
# rnnengine.kernels._cy_gru: the twin of rnnengine/kernels/numba_gru.py.
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
from cpython.pycapsule cimport PyCapsule_New
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy

from _blas cimport NoTrans, _gemm, _recurrent_product
from _gates cimport (RNNENGINE_BOUNDSCHECK, _batch_threads, _expect_shape,
                     _set_gate_threads, activate_block, apply,
                     rnnengine_gate_threads)


cdef inline void _gru_row_reset_after(floating* h_b, const floating* xproj_bt,
                                      floating* z,
                                      const floating* input_bias,
                                      const floating* recurrent_bias, Py_ssize_t H,
                                      int activation,
                                      int recurrent_activation) noexcept nogil:
    # h_b is (H,); xproj_bt, z (this row of rec: scratch, overwritten with the
    # gates) and both biases are (3H,), blocks z, r, h.
    cdef Py_ssize_t j
    for j in range(2 * H):
        z[j] += xproj_bt[j] + input_bias[j] + recurrent_bias[j]
    activate_block(z, 2 * H, recurrent_activation)  # z, r
    # hh = act(x_h + r * (h_tm1 @ U_h + b_rec_h))
    for j in range(2 * H, 3 * H):
        z[j] = xproj_bt[j] + input_bias[j] + z[j - H] * (z[j] + recurrent_bias[j])
    activate_block(z + 2 * H, H, activation)
    for j in range(H):
        h_b[j] = z[j] * h_b[j] + (1 - z[j]) * z[2 * H + j]


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
                       const floating* kernel, const floating* recurrent_kernel,
                       const floating* recurrent_kernel_h,
                       const floating* input_bias, const floating* recurrent_bias,
                       Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                       int activation, int recurrent_activation, bint go_backwards,
                       bint return_sequences, bint reset_after) noexcept nogil:
    # y_out is (B, T or 1, H); h is (B, H), initial state in, final state out;
    # xproj is (B, T, 3H); rec is (B, 3H); rec_h and rh are (B, H); x is (B, T, C);
    # kernel is (C, 3H); recurrent_kernel is (H, 3H); recurrent_kernel_h is its
    # last block (H, H), contiguous; input_bias and recurrent_bias are (3H,).
    cdef Py_ssize_t K = 3 * H
    cdef Py_ssize_t T_out = T if return_sequences else 1
    cdef Py_ssize_t s, t, b, s_out
    # xproj.reshape(B * T, 3H)[:] = x.reshape(B * T, C) @ kernel
    _gemm(NoTrans, NoTrans, <int>(B * T), <int>K, <int>C, 1, x, <int>C,
          kernel, <int>K, 0, xproj, <int>K)
    for s in range(T):
        t = T - 1 - s if go_backwards else s
        if reset_after:
            # rec[:] = h_tm1 @ recurrent_kernel
            _recurrent_product(rec, h, recurrent_kernel, <int>B, <int>H, <int>K, <int>K, <int>K)
            for b in range(B):
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
                _gru_row_reset_before(h + b * H, xproj + (b * T + t) * K,
                                      rec + b * K, rec_h + b * H, input_bias, H,
                                      activation)
        # y_out[:, s] = h (every step), or y_out[:, 0] = h (last step only)
        if return_sequences or s == T - 1:
            s_out = s if return_sequences else 0
            for b in range(B):
                memcpy(y_out + (b * T_out + s_out) * H, h + b * H, H * sizeof(floating))


def gru_forward(floating[:, :, ::1] y_out,  # OUT
                floating[:, ::1] h,  # IN/OUT
                floating[:, :, ::1] xproj,  # SCRATCH
                floating[:, ::1] rec,  # SCRATCH
                floating[:, ::1] rec_h,  # SCRATCH
                floating[:, ::1] rh,  # SCRATCH
                const floating[:, :, ::1] x,  # IN
                const floating[:, ::1] kernel,  # IN
                const floating[:, ::1] recurrent_kernel,  # IN
                const floating[:, ::1] recurrent_kernel_h,  # IN
                const floating[::1] input_bias,  # IN
                const floating[::1] recurrent_bias,  # IN
                Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                int activation, int recurrent_activation, bint go_backwards,
                bint return_sequences, bint reset_after):
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
    with nogil:
        if n == 1:
            nb = B
            b0 = 0
            _gru_forward(y_p + b0 * T_out * H, h_p + b0 * H, xp_p + b0 * T * 3 * H, rec_p + b0 * 3 * H, rech_p + b0 * H, rh_p + b0 * H, x_p + b0 * T * C,
                 &kernel[0, 0], &recurrent_kernel[0, 0], &recurrent_kernel_h[0, 0], &input_bias[0], &recurrent_bias[0], nb, T, C, H, activation, recurrent_activation, go_backwards, return_sequences, reset_after)
        else:
            for i in prange(n, schedule='static', num_threads=n):
                b0 = i * B // n
                nb = (i + 1) * B // n - b0
                _gru_forward(y_p + b0 * T_out * H, h_p + b0 * H, xp_p + b0 * T * 3 * H, rec_p + b0 * 3 * H, rech_p + b0 * H, rh_p + b0 * H, x_p + b0 * T * C,
                     &kernel[0, 0], &recurrent_kernel[0, 0], &recurrent_kernel_h[0, 0], &input_bias[0], &recurrent_bias[0], nb, T, C, H, activation, recurrent_activation, go_backwards, return_sequences, reset_after)


def set_num_threads(int n):
    """Threads one call of this module's kernel may split its batch over.

    rnnengine.config.set_num_threads sets it for every kernel module. A call
    splits into row blocks of at least MIN_ROWS_PER_THREAD rows, and only from
    MIN_WORK_TO_SPLIT multiply-adds (src/_gates.pxd); a build without OpenMP
    stays serial.
    """
    _set_gate_threads(n)


def get_num_threads():
    """Threads a call of this module's kernel may split its batch over."""
    return rnnengine_gate_threads


def _pointer_kernels():
    """(float32, float64) pointers to _gru_forward as PyCapsules, for the fused
    call plans in rnnengine.kernels._cy_plan (src/_plan.pyx)."""
    return (PyCapsule_New(<void*>_gru_forward[float], NULL, NULL),
            PyCapsule_New(<void*>_gru_forward[double], NULL, NULL))
