"""Dense forward and in-place activations in Numba.

Dense is not a recurrent cell and both backends share this one implementation:
its cost is one GEMM (BLAS either way) and one pass over the output.
"""
import math

import numpy as np
from numba import njit

from . import _numba_cache  # noqa: F401  (an installed package caches outside itself)
from ..config import FASTMATH_FLAGS
from ._activations import LOG_SOFTMAX, SOFTMAX, apply


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS, error_model="numpy")
def _activation_inplace(y, activation):
    # y is (N, F); row-wise codes (softmax) reduce over F, the others are elementwise.
    N, F = y.shape
    if activation == SOFTMAX or activation == LOG_SOFTMAX:
        for n in range(N):
            m = y[n, 0]
            for j in range(1, F):
                m = max(m, y[n, j])
            s = 0.0
            for j in range(F):
                e = math.exp(y[n, j] - m)
                s += e
                if activation == SOFTMAX:
                    y[n, j] = e
            if activation == SOFTMAX:
                inv = 1.0 / s
                for j in range(F):
                    y[n, j] *= inv
            else:
                log_s = math.log(s)
                for j in range(F):
                    y[n, j] = y[n, j] - m - log_s
    else:
        for n in range(N):
            for j in range(F):
                y[n, j] = apply(activation, y[n, j])


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS, error_model="numpy")
def _dense_forward(y_out, x, kernel, bias, N, C, F, activation, use_bias):
    # y_out is (N, F); x is (N, C); kernel is (C, F); bias is (F,)
    np.dot(x, kernel, y_out)
    if use_bias:
        for n in range(N):
            for j in range(F):
                y_out[n, j] += bias[j]
    _activation_inplace(y_out, activation)
