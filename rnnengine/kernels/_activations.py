"""Activation codes shared by every kernel, and their Numba implementations.

Kernels take an activation as an int code rather than a function object: Numba
compiles one copy of a kernel per distinct function object, and Cython cannot
take Python callables inside ``nogil`` loops. The Cython twin of ``apply`` lives
in ``src/_gates.pxd`` and must use the same codes and formulas.

Formulas follow Keras 3 (``keras/src/activations/activations.py``):
- ``hard_sigmoid`` is Keras 3's ``relu6(x + 3) / 6``; Keras 2's ``0.2 * x + 0.5``
  clip is kept as ``HARD_SIGMOID_K2`` for models saved by tf.keras 2.x.
- ``gelu`` is the exact erf form (Keras's default ``approximate=False``).
- ``elu`` uses alpha = 1, ``leaky_relu`` Keras 3's negative_slope = 0.2.
"""
import math

from numba import njit

from ..config import FASTMATH_FLAGS

LINEAR = 0
TANH = 1
SIGMOID = 2
HARD_SIGMOID = 3
RELU = 4
ELU = 5
SELU = 6
SOFTPLUS = 7
SOFTSIGN = 8
SWISH = 9
GELU = 10
EXPONENTIAL = 11
HARD_SIGMOID_K2 = 12
RELU6 = 13
LEAKY_RELU = 14
HARD_SWISH = 15
MISH = 16
# Row-wise activations: valid only where a whole feature row is at hand (Dense,
# Activation), never inside a recurrent cell.
SOFTMAX = 100
LOG_SOFTMAX = 101

ELEMENTWISE_CODES = {
    "linear": LINEAR,
    "tanh": TANH,
    "sigmoid": SIGMOID,
    "hard_sigmoid": HARD_SIGMOID,
    "relu": RELU,
    "elu": ELU,
    "selu": SELU,
    "softplus": SOFTPLUS,
    "softsign": SOFTSIGN,
    "swish": SWISH,
    "silu": SWISH,
    "gelu": GELU,
    "exponential": EXPONENTIAL,
    "hard_sigmoid_keras2": HARD_SIGMOID_K2,
    "relu6": RELU6,
    "leaky_relu": LEAKY_RELU,
    "hard_swish": HARD_SWISH,
    "hard_silu": HARD_SWISH,
    "mish": MISH,
}
ROWWISE_CODES = {"softmax": SOFTMAX, "log_softmax": LOG_SOFTMAX}

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
SQRT_HALF = 0.7071067811865476


@njit(cache=True, nogil=True, inline="always", fastmath=FASTMATH_FLAGS)
def _softplus(v):
    # log1p(exp(v)) without overflow: max(v, 0) + log1p(exp(-|v|))
    return max(v, 0.0) + math.log1p(math.exp(-abs(v)))


@njit(cache=True, nogil=True, inline="always", fastmath=FASTMATH_FLAGS)
def _sigmoid(v):
    # Two branches so that exp never overflows for large |v|.
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


@njit(cache=True, nogil=True, inline="always", fastmath=FASTMATH_FLAGS)
def apply(code, v):
    """Elementwise activation ``code`` at ``v``; the result keeps ``v``'s type."""
    if code == TANH:
        return math.tanh(v)
    if code == SIGMOID:
        return _sigmoid(v)
    if code == LINEAR:
        return v
    if code == HARD_SIGMOID:
        return min(max(v / 6.0 + 0.5, 0.0), 1.0)
    if code == RELU:
        return max(v, 0.0)
    if code == ELU:
        return v if v > 0 else math.expm1(v)
    if code == SELU:
        return SELU_SCALE * (v if v > 0 else SELU_ALPHA * math.expm1(v))
    if code == SOFTPLUS:
        return _softplus(v)
    if code == SOFTSIGN:
        return v / (1.0 + abs(v))
    if code == SWISH:
        return v * _sigmoid(v)
    if code == GELU:
        return 0.5 * v * (1.0 + math.erf(v * SQRT_HALF))
    if code == EXPONENTIAL:
        return math.exp(v)
    if code == HARD_SIGMOID_K2:
        return min(max(0.2 * v + 0.5, 0.0), 1.0)
    if code == RELU6:
        return min(max(v, 0.0), 6.0)
    if code == LEAKY_RELU:
        return v if v >= 0 else 0.2 * v
    if code == HARD_SWISH:
        return v * min(max(v / 6.0 + 0.5, 0.0), 1.0)
    if code == MISH:
        return v * math.tanh(_softplus(v))
    # Unknown codes never reach a kernel: the layer boundary rejects them.
    return v
