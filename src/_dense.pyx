# cython: language_level=3
# Dense forward, in-place activations and the activations' backward in Cython,
# compiled into rnnengine.kernels._cy_dense: the twin of
# rnnengine/kernels/numba_dense.py and numba_dense_backward.py (same
# signatures, same activation codes), so that the Cython backend runs a whole
# inference stack, and Dense's and Activation's training, without Numba, and a
# fresh process pays no JIT or Numba cache load on its first prediction.
from cpython.pycapsule cimport PyCapsule_New

from _call cimport activation_d, activation_f, dense_d, dense_f
from cython cimport floating

from _blas cimport _input_product, _load_det
from _gates cimport _exp, _log, activate_block, apply_grad_block

_load_det()

cdef enum:
    LINEAR = 0
    SOFTMAX = 100
    LOG_SOFTMAX = 101
    GRAD_BLOCK = 256  # elements per apply_grad_block call in _activation_backward


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


def _activation_pointer_kernels():
    """(float32, float64) pointers to _activation_rows (in place over (N, F)) as
    PyCapsules, for the fused plans' Activation steps."""
    cdef activation_f f32 = _activation_rows[float]
    cdef activation_d f64 = _activation_rows[double]
    return (PyCapsule_New(<void*>f32, NULL, NULL), PyCapsule_New(<void*>f64, NULL, NULL))


def _pointer_kernels():
    """(float32, float64) pointers to _dense_forward as PyCapsules, for the fused
    call plans in rnnengine.kernels._cy_plan (src/_plan.pyx)."""
    # Typed through src/_call.pxd first: a signature that drifts fails to compile here.
    cdef dense_f f32 = _dense_forward[float]
    cdef dense_d f64 = _dense_forward[double]
    return (PyCapsule_New(<void*>f32, NULL, NULL), PyCapsule_New(<void*>f64, NULL, NULL))


cdef void _activation_backward(floating* dz_out, const floating* dy, const floating* z,
                               const floating* y, Py_ssize_t N, Py_ssize_t F,
                               int activation) noexcept nogil:
    # dz_out, dy, z, y are (N, F); dz_out may alias dy (element j of dy is read
    # before element j of dz_out is written). The row sums are double, as in
    # numba_dense_backward (whose 0.0 literal makes them float64).
    cdef Py_ssize_t n, j, i, m
    cdef double s
    cdef floating d[GRAD_BLOCK]
    cdef floating* o
    cdef const floating* g
    cdef const floating* p
    if activation == SOFTMAX:
        # forward: y = exp(z) / sum(exp(z)); dz = y * (dy - sum(dy * y))
        for n in range(N):
            o = dz_out + n * F
            g = dy + n * F
            p = y + n * F
            s = 0
            for j in range(F):
                s += g[j] * p[j]
            for j in range(F):
                o[j] = <floating>(p[j] * (g[j] - s))
    elif activation == LOG_SOFTMAX:
        # forward: y = z - log(sum(exp(z))); dz = dy - softmax(z) * sum(dy)
        for n in range(N):
            o = dz_out + n * F
            g = dy + n * F
            p = y + n * F
            s = 0
            for j in range(F):
                s += g[j]
            for j in range(F):
                o[j] = <floating>(g[j] - _exp(p[j]) * s)
    elif activation == LINEAR:
        for i in range(N * F):
            dz_out[i] = dy[i]
    else:
        # dz = dy * act'(z), the derivatives a block at a time (apply_grad_block:
        # the switch on the code outside the loop, as the recurrent backward kernels)
        i = 0
        while i < N * F:
            m = N * F - i if N * F - i < GRAD_BLOCK else GRAD_BLOCK
            apply_grad_block(d, z + i, y + i, m, activation)
            for j in range(m):
                dz_out[i + j] = dy[i + j] * d[j]
            i += m


def activation_backward(floating[:, ::1] dz_out,  # OUT (may alias dy)
                        const floating[:, ::1] dy,  # IN
                        const floating[:, ::1] z,  # IN
                        const floating[:, ::1] y,  # IN
                        int activation):
    """dz_out (N, F) = the gradient w.r.t. z of y = activation(z), given dy; see
    numba_dense_backward._activation_backward (the contract: four (N, F)
    C-contiguous arrays of one float dtype, checked by the layers)."""
    cdef Py_ssize_t N = dy.shape[0]
    cdef Py_ssize_t F = dy.shape[1]
    if N == 0 or F == 0:
        return
    with nogil:
        _activation_backward(&dz_out[0, 0], &dy[0, 0], &z[0, 0], &y[0, 0], N, F, activation)


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
