# cython: language_level=3
# LSTM forward kernel in Cython, compiled into rnnengine.kernels._cy_lstm: the
# twin of rnnengine/kernels/numba_lstm.py.
#
# Contract: rnnengine/kernels/__init__.py (argument order, shapes, semantics).
# float32 or float64 through the fused `floating` type; every buffer
# C-contiguous; weights and x may be read-only. The def entry turns memoryviews
# into pointers and releases the GIL; the work is in the `noexcept nogil`
# pointer kernel, which never allocates and never raises.
#
# Design: one GEMM projects every timestep (x viewed as (B*T, C)), then each
# step is one GEMM h_tm1 @ recurrent_kernel for all four gates and one fused
# elementwise pass, as in the Numba kernel. The pass runs on OpenMP threads over
# the batch only after set_num_threads(n > 1), and from PARALLEL_MIN_BH
# elements a step (why: _gates.pxd).
from cpython.pycapsule cimport PyCapsule_New
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy

from _blas cimport NoTrans, _gemm, _recurrent_product
from _gates cimport (RNNENGINE_BOUNDSCHECK, _batch_threads, _expect_shape,
                     _set_gate_threads, activate_block, apply,
                     rnnengine_gate_threads)


cdef inline void _lstm_row(floating* h_b, floating* c_b, const floating* xproj_bt,
                           floating* z, const floating* bias,
                           Py_ssize_t H, int activation,
                           int recurrent_activation) noexcept nogil:
    # h_b and c_b are (H,); xproj_bt, z (this row of rec: scratch, overwritten
    # with the gates) and bias are (4H,), gate blocks in Keras's order i, f, c, o.
    # Each activation runs over a whole block (activate_block) so it vectorizes.
    cdef Py_ssize_t j
    for j in range(4 * H):
        z[j] += xproj_bt[j] + bias[j]
    activate_block(z, 2 * H, recurrent_activation)  # i, f
    activate_block(z + 2 * H, H, activation)  # g = act(zc)
    activate_block(z + 3 * H, H, recurrent_activation)  # o
    for j in range(H):
        c_b[j] = z[H + j] * c_b[j] + z[j] * z[2 * H + j]  # c = f * c_tm1 + i * g
        h_b[j] = c_b[j]
    activate_block(h_b, H, activation)
    for j in range(H):
        h_b[j] *= z[3 * H + j]  # h = o * act(c)


cdef void _lstm_forward(floating* y_out, floating* h, floating* c, floating* xproj,
                        floating* rec, const floating* x, const floating* kernel,
                        const floating* recurrent_kernel, const floating* bias,
                        Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                        int activation, int recurrent_activation,
                        bint go_backwards, bint return_sequences) noexcept nogil:
    # y_out is (B, T or 1, H); h and c are (B, H), initial state in, final out;
    # xproj is (B, T, 4H); rec is (B, 4H); x is (B, T, C);
    # kernel is (C, 4H); recurrent_kernel is (H, 4H); bias is (4H,)
    cdef Py_ssize_t K = 4 * H
    cdef Py_ssize_t T_out = T if return_sequences else 1
    cdef Py_ssize_t s, t, b, s_out
    # xproj.reshape(B * T, 4H)[:] = x.reshape(B * T, C) @ kernel
    _gemm(NoTrans, NoTrans, <int>(B * T), <int>K, <int>C, 1, x, <int>C,
          kernel, <int>K, 0, xproj, <int>K)
    for s in range(T):
        t = T - 1 - s if go_backwards else s
        # rec[:] = h_tm1 @ recurrent_kernel
        _recurrent_product(rec, h, recurrent_kernel, <int>B, <int>H, <int>K, <int>K, <int>K)
        for b in range(B):
            _lstm_row(h + b * H, c + b * H, xproj + (b * T + t) * K, rec + b * K,
                      bias, H, activation, recurrent_activation)
        # y_out[:, s] = h (every step), or y_out[:, 0] = h (last step only)
        if return_sequences or s == T - 1:
            s_out = s if return_sequences else 0
            for b in range(B):
                memcpy(y_out + (b * T_out + s_out) * H, h + b * H, H * sizeof(floating))


def lstm_forward(floating[:, :, ::1] y_out,  # OUT
                 floating[:, ::1] h,  # IN/OUT
                 floating[:, ::1] c,  # IN/OUT
                 floating[:, :, ::1] xproj,  # SCRATCH
                 floating[:, ::1] rec,  # SCRATCH
                 const floating[:, :, ::1] x,  # IN
                 const floating[:, ::1] kernel,  # IN
                 const floating[:, ::1] recurrent_kernel,  # IN
                 const floating[::1] bias,  # IN
                 Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                 int activation, int recurrent_activation, bint go_backwards,
                 bint return_sequences):
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
    with nogil:
        if n == 1:
            nb = B
            b0 = 0
            _lstm_forward(y_p + b0 * T_out * H, h_p + b0 * H, c_p + b0 * H, xp_p + b0 * T * 4 * H, rec_p + b0 * 4 * H, x_p + b0 * T * C,
                 &kernel[0, 0], &recurrent_kernel[0, 0], &bias[0], nb, T, C, H, activation, recurrent_activation, go_backwards, return_sequences)
        else:
            for i in prange(n, schedule='static', num_threads=n):
                b0 = i * B // n
                nb = (i + 1) * B // n - b0
                _lstm_forward(y_p + b0 * T_out * H, h_p + b0 * H, c_p + b0 * H, xp_p + b0 * T * 4 * H, rec_p + b0 * 4 * H, x_p + b0 * T * C,
                     &kernel[0, 0], &recurrent_kernel[0, 0], &bias[0], nb, T, C, H, activation, recurrent_activation, go_backwards, return_sequences)


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
    """(float32, float64) pointers to _lstm_forward as PyCapsules, for the fused
    call plans in rnnengine.kernels._cy_plan (src/_plan.pyx)."""
    return (PyCapsule_New(<void*>_lstm_forward[float], NULL, NULL),
            PyCapsule_New(<void*>_lstm_forward[double], NULL, NULL))
