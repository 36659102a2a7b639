# cython: language_level=3
# SimpleRNN forward kernel in Cython, compiled into rnnengine.kernels._cy_simple_rnn:
# the twin of rnnengine/kernels/numba_simple_rnn.py.
#
# Contract: rnnengine/kernels/__init__.py (argument order, shapes, semantics).
# float32 or float64 through the fused `floating` type; every buffer
# C-contiguous; weights and x may be read-only. The def entry turns memoryviews
# into pointers and releases the GIL; the work is in the `noexcept nogil`
# pointer kernel, which never allocates and never raises.
#
# Design: one GEMM projects every timestep (x viewed as (B*T, C)), then each
# step is one GEMM h_tm1 @ recurrent_kernel and one fused elementwise pass, as
# in the Numba kernel. The pass runs on OpenMP threads over the batch only after
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


cdef inline void _simple_rnn_row(floating* h_b, const floating* xproj_bt,
                                 floating* rec_b, const floating* bias,
                                 Py_ssize_t H, int activation) noexcept nogil:
    # h_b, xproj_bt, rec_b and bias are (H,): one batch row of one step; rec_b
    # is scratch, overwritten with the pre-activation.
    cdef Py_ssize_t j
    for j in range(H):
        rec_b[j] += xproj_bt[j] + bias[j]
    activate_block(rec_b, H, activation)
    memcpy(h_b, rec_b, H * sizeof(floating))


cdef void _simple_rnn_forward(floating* y_out, floating* h, floating* xproj,
                              floating* rec, const floating* x,
                              const floating* kernel,
                              const floating* recurrent_kernel,
                              const floating* bias, Py_ssize_t B, Py_ssize_t T,
                              Py_ssize_t C, Py_ssize_t H, int activation,
                              bint go_backwards, bint return_sequences) noexcept nogil:
    # y_out is (B, T or 1, H); h is (B, H), initial state in, final state out;
    # xproj is (B, T, H); rec is (B, H); x is (B, T, C);
    # kernel is (C, H); recurrent_kernel is (H, H); bias is (H,)
    cdef Py_ssize_t T_out = T if return_sequences else 1
    cdef Py_ssize_t s, t, b, s_out
    # xproj.reshape(B * T, H)[:] = x.reshape(B * T, C) @ kernel
    _gemm(NoTrans, NoTrans, <int>(B * T), <int>H, <int>C, 1, x, <int>C,
          kernel, <int>H, 0, xproj, <int>H)
    for s in range(T):
        t = T - 1 - s if go_backwards else s
        # rec[:] = h_tm1 @ recurrent_kernel
        _recurrent_product(rec, h, recurrent_kernel, <int>B, <int>H, <int>H, <int>H, <int>H)
        for b in range(B):
            _simple_rnn_row(h + b * H, xproj + (b * T + t) * H, rec + b * H,
                            bias, H, activation)
        # y_out[:, s] = h (every step), or y_out[:, 0] = h (last step only)
        if return_sequences or s == T - 1:
            s_out = s if return_sequences else 0
            for b in range(B):
                memcpy(y_out + (b * T_out + s_out) * H, h + b * H, H * sizeof(floating))


def simple_rnn_forward(floating[:, :, ::1] y_out,  # OUT
                       floating[:, ::1] h,  # IN/OUT
                       floating[:, :, ::1] xproj,  # SCRATCH
                       floating[:, ::1] rec,  # SCRATCH
                       const floating[:, :, ::1] x,  # IN
                       const floating[:, ::1] kernel,  # IN
                       const floating[:, ::1] recurrent_kernel,  # IN
                       const floating[::1] bias,  # IN
                       Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                       int activation, bint go_backwards, bint return_sequences):
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
    with nogil:
        if n == 1:
            nb = B
            b0 = 0
            _simple_rnn_forward(y_p + b0 * T_out * H, h_p + b0 * H, xp_p + b0 * T * H, rec_p + b0 * H, x_p + b0 * T * C,
                 &kernel[0, 0], &recurrent_kernel[0, 0], &bias[0], nb, T, C, H, activation, go_backwards, return_sequences)
        else:
            for i in prange(n, schedule='static', num_threads=n):
                b0 = i * B // n
                nb = (i + 1) * B // n - b0
                _simple_rnn_forward(y_p + b0 * T_out * H, h_p + b0 * H, xp_p + b0 * T * H, rec_p + b0 * H, x_p + b0 * T * C,
                     &kernel[0, 0], &recurrent_kernel[0, 0], &bias[0], nb, T, C, H, activation, go_backwards, return_sequences)


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
    """(float32, float64) pointers to _simple_rnn_forward as PyCapsules, for the fused
    call plans in rnnengine.kernels._cy_plan (src/_plan.pyx)."""
    return (PyCapsule_New(<void*>_simple_rnn_forward[float], NULL, NULL),
            PyCapsule_New(<void*>_simple_rnn_forward[double], NULL, NULL))
