"""Backward of an activation over a (N, F) block, for Dense and Activation.

Contract: ``activation_backward(dz_out, dy, z, y, activation)`` writes the
gradient w.r.t. the activation's input ``z`` given the gradient ``dy`` w.r.t. its
output ``y = act(z)``. All four arrays are (N, F), C-contiguous, one float dtype;
``dz_out`` may alias ``dy``. Row-wise codes (softmax, log_softmax) reduce over F,
the others are elementwise through ``_activations.apply_grad``. The NumPy spec
is ``reference.dense_backward``. The matrix products of Dense's backward are
single BLAS calls made by the layer (``np.dot(..., out=)`` into its buffers).
It is the ``("activation", "backward")`` kernel of ``kernels/__init__.py``; the
Cython twin is ``activation_backward`` in ``src/_dense.pyx``.
"""
import math

from numba import njit

from . import _numba_cache  # noqa: F401  (an installed package caches outside itself)
from ..config import FASTMATH_FLAGS
from ._activations import LINEAR, LOG_SOFTMAX, SOFTMAX, apply_grad


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS, error_model="numpy")
def _activation_backward(dz_out, dy, z, y, activation):
    # dz_out, dy, z, y are (N, F)
    N, F = dy.shape
    if activation == SOFTMAX:
        # forward: y = exp(z) / sum(exp(z)); dz = y * (dy - sum(dy * y))
        for n in range(N):
            s = 0.0
            for j in range(F):
                s += dy[n, j] * y[n, j]
            for j in range(F):
                dz_out[n, j] = y[n, j] * (dy[n, j] - s)
    elif activation == LOG_SOFTMAX:
        # forward: y = z - log(sum(exp(z))); dz = dy - softmax(z) * sum(dy)
        for n in range(N):
            s = 0.0
            for j in range(F):
                s += dy[n, j]
            for j in range(F):
                dz_out[n, j] = dy[n, j] - math.exp(y[n, j]) * s
    elif activation == LINEAR:
        for n in range(N):
            for j in range(F):
                dz_out[n, j] = dy[n, j]
    else:
        for n in range(N):
            for j in range(F):
                dz_out[n, j] = dy[n, j] * apply_grad(activation, z[n, j], y[n, j])
