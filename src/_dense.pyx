# cython: language_level=3
# Dense forward and in-place activations in Cython, compiled into
# rnnengine.kernels._cy_dense: the twin of rnnengine/kernels/numba_dense.py
# (same signatures, same activation codes), so that the Cython backend runs a
# whole inference stack without Numba, and a fresh process pays no JIT or
# Numba cache load on its first prediction.
from cpython.pycapsule cimport PyCapsule_New

from _call cimport dense_d, dense_f
from cython cimport floating

from _blas cimport _input_product, _load_det
from _gates cimport _exp, _log, activate_block, apply_grad_block

_load_det()

cdef enum:
    SOFTMAX = 100
    LOG_SOFTMAX = 101


cdef void _activation_rows(floating* y, Py_ssize_t N, Py_ssize_t F, int activation) noexcept nogil:
    # y is (N, F); softmax and log_softmax reduce over F, the others are elementwise.
    cdef Py_ssize_t n, j
    cdef floating m, s, e
    cdef floating* row
    if activation != SOFTMAX and activation != LOG_SOFTMAX:
        activate_block(y, N * F, activation)
        return
    for n in range(N):
        row = y + n * F
        m = row[0]
        for j in range(1, F):
            if row[j] > m or row[j] != row[j]:
                m = row[j]
        s = 0
        for j in range(F):
            e = _exp(row[j] - m)
            s += e
            if activation == SOFTMAX:
                row[j] = e
        if activation == SOFTMAX:
            e = 1 / s
            for j in range(F):
                row[j] *= e
        else:
            e = _log(s)
            for j in range(F):
                row[j] = row[j] - m - e


def activation_inplace(floating[:, ::1] y,  # IN/OUT
                       int activation):
    """y[:] = activation(y) over (N, F) rows; see numba_dense._activation_inplace."""
    with nogil:
        _activation_rows(&y[0, 0], y.shape[0], y.shape[1], activation)


cdef void _dense_forward(floating* y, const floating* x, const floating* kernel,
                         const floating* bias, Py_ssize_t N, Py_ssize_t C, Py_ssize_t F,
                         int activation, bint use_bias) noexcept nogil:
    # y (N, F) = activation(x (N, C) @ kernel (C, F) + bias (F,))
    cdef Py_ssize_t n, j
    _input_product(y, x, kernel, N, C, F)  # a GEMM; row-invariant in deterministic mode
    if use_bias:
        for n in range(N):
            for j in range(F):
                y[n * F + j] += bias[j]
    _activation_rows(y, N, F, activation)


def dense_forward(floating[:, ::1] y_out,  # OUT
                  const floating[:, ::1] x,  # IN
                  const floating[:, ::1] kernel,  # IN
                  const floating[::1] bias,  # IN
                  Py_ssize_t N, Py_ssize_t C, Py_ssize_t F, int activation, bint use_bias):
    """y_out (N, F) = activation(x (N, C) @ kernel (C, F) + bias (F,))."""
    with nogil:
        _dense_forward(&y_out[0, 0], &x[0, 0], &kernel[0, 0], &bias[0], N, C, F, activation, use_bias)


def _pointer_kernels():
    """(float32, float64) pointers to _dense_forward as PyCapsules, for the fused
    call plans in rnnengine.kernels._cy_plan (src/_plan.pyx)."""
    # Typed through src/_call.pxd first: a signature that drifts fails to compile here.
    cdef dense_f f32 = _dense_forward[float]
    cdef dense_d f64 = _dense_forward[double]
    return (PyCapsule_New(<void*>f32, NULL, NULL), PyCapsule_New(<void*>f64, NULL, NULL))


def activation_grad(floating[::1] out,  # OUT
                    const floating[::1] pre,  # IN
                    const floating[::1] post,  # IN
                    int activation):
    """out[:] = the derivative of elementwise ``activation`` at ``pre``, where
    ``post = activation(pre)``: _gates.pxd's apply_grad_block, the derivatives the
    Cython backward kernels use (the twin of _activations.apply_grad), exposed
    for the parity tests."""
    if pre.shape[0] != out.shape[0] or post.shape[0] != out.shape[0]:
        raise ValueError(f"activation_grad: out, pre and post have lengths {out.shape[0]}, "
                         f"{pre.shape[0]} and {post.shape[0]}.")
    if out.shape[0] == 0:
        return
    with nogil:
        apply_grad_block(&out[0], &pre[0], &post[0], out.shape[0], activation)
