"""Activation codes shared by every kernel, and their Numba implementations.

Kernels take an activation as an int code rather than a function object: Numba
compiles one copy of a kernel per distinct function object, and Cython cannot
take Python callables inside ``nogil`` loops. The Cython twin of ``apply`` lives
in ``src/_gates.pxd`` and must use the same codes and formulas. ``apply_grad`` is
the derivative the backward kernels use, ``apply_grad_block`` its sweep over a
gate block (their Cython twins are also in ``src/_gates.pxd``);
``reference.ACTIVATION_GRADS`` is the NumPy spec.

Formulas follow Keras 3 (``keras/src/activations/activations.py``):
- ``hard_sigmoid`` is Keras 3's ``relu6(x + 3) / 6``; Keras 2's ``0.2 * x + 0.5``
  clip is kept as ``HARD_SIGMOID_K2`` for models saved by tf.keras 2.x.
- ``gelu`` is the exact erf form (Keras's default ``approximate=False``).
- ``elu`` uses alpha = 1, ``leaky_relu`` Keras 3's negative_slope = 0.2.
"""
import math

import numpy as np

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from . import _numba_cache  # noqa: F401  (an installed package caches outside itself)
from ..config import FASTMATH_FLAGS
from .activation_codes import (  # noqa: F401  (re-exported)
    LINEAR,
    TANH,
    SIGMOID,
    HARD_SIGMOID,
    RELU,
    ELU,
    SELU,
    SOFTPLUS,
    SOFTSIGN,
    SWISH,
    GELU,
    EXPONENTIAL,
    HARD_SIGMOID_K2,
    RELU6,
    LEAKY_RELU,
    HARD_SWISH,
    MISH,
    SOFTMAX,
    LOG_SOFTMAX,
    ELEMENTWISE_CODES,
    ROWWISE_CODES,
)

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
SQRT_HALF = 0.7071067811865476


@njit(cache=True, nogil=True, inline="always", fastmath=FASTMATH_FLAGS, error_model="numpy")
def _softplus(v):
    # log1p(exp(v)) without overflow: max(v, 0) + log1p(exp(-|v|))
    return max(v, 0.0) + math.log1p(math.exp(-abs(v)))


@njit(cache=True, nogil=True, inline="always", fastmath=FASTMATH_FLAGS, error_model="numpy")
def _sigmoid(v):
    # Two branches so that exp never overflows for large |v|.
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


@njit(cache=True, nogil=True, inline="always", fastmath=FASTMATH_FLAGS, error_model="numpy")
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


INV_SQRT_2PI = 0.3989422804014327


@njit(cache=True, nogil=True, inline="always", fastmath=FASTMATH_FLAGS, error_model="numpy")
def apply_grad(code, pre, post):
    """Derivative of activation ``code`` at ``pre``, where ``post = apply(code, pre)``.

    Codes whose derivative is a function of the output (tanh, sigmoid, exponential,
    elu, selu) read ``post`` and cost no transcendental call, as TensorFlow's
    ``TanhGrad``/``SigmoidGrad`` do; the others read ``pre``. At a kink the
    one-sided value matches TensorFlow's gradient: relu and leaky_relu take the
    left value at 0 (TF's ``features > 0``), relu6 and the hard sigmoids are 0 on
    the clip boundaries (TF's ``Relu6Grad``: ``0 < x < 6``).
    For LSTM's cell activation, ``pre`` is the cell state c and ``post`` act(c).
    """
    if code == TANH:
        return 1.0 - post * post
    if code == SIGMOID:
        return post * (1.0 - post)
    if code == LINEAR:
        return 1.0
    if code == HARD_SIGMOID:
        return 1.0 / 6.0 if -3.0 < pre < 3.0 else 0.0
    if code == RELU:
        return 1.0 if pre > 0 else 0.0
    if code == ELU:
        return 1.0 if pre > 0 else post + 1.0
    if code == SELU:
        return SELU_SCALE if pre > 0 else post + SELU_SCALE * SELU_ALPHA
    if code == SOFTPLUS:
        return _sigmoid(pre)
    if code == SOFTSIGN:
        d = 1.0 + abs(pre)
        return 1.0 / (d * d)
    if code == SWISH:
        s = _sigmoid(pre)
        return s * (1.0 + pre * (1.0 - s))
    if code == GELU:
        return (0.5 * (1.0 + math.erf(pre * SQRT_HALF))
                + pre * INV_SQRT_2PI * math.exp(-0.5 * pre * pre))
    if code == EXPONENTIAL:
        return post
    if code == HARD_SIGMOID_K2:
        return 0.2 if -2.5 < pre < 2.5 else 0.0
    if code == RELU6:
        return 1.0 if 0.0 < pre < 6.0 else 0.0
    if code == LEAKY_RELU:
        return 1.0 if pre > 0 else 0.2
    if code == HARD_SWISH:
        # d/dv [v * hard_sigmoid(v)] = hard_sigmoid(v) + v * hard_sigmoid'(v)
        hs = min(max(pre / 6.0 + 0.5, 0.0), 1.0)
        return hs + pre / 6.0 if -3.0 < pre < 3.0 else hs
    if code == MISH:
        # d/dv [v * tanh(sp(v))] = tanh(sp) + v * (1 - tanh(sp)^2) * sigmoid(v)
        t = math.tanh(_softplus(pre))
        return t + pre * (1.0 - t * t) * _sigmoid(pre)
    return 1.0


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS, error_model="numpy")
def apply_grad_block(out, pre, post, code, k0, k1):
    """``out[:, :, k0:k1] = apply_grad(code, pre, post)`` over (B, T, G) arrays.

    The backward kernels fill their ``dgates`` scratch with the gate activations'
    derivatives in one sweep per gate block before the time loop, then multiply
    the upstream gradient in place. One sweep per block keeps ``apply_grad``'s
    branch on ``code`` out of the recurrent loop, and compiles it once per dtype
    in this function rather than once per call site in every kernel (Numba's
    compile time grows with each inlined copy).
    """
    B, T, _ = out.shape
    for b in range(B):
        for t in range(T):
            for k in range(k0, k1):
                out[b, t, k] = apply_grad(code, pre[b, t, k], post[b, t, k])


# -- vectorized blocks for the inference kernels -------------------------------------------
# Design: libm's tanhf/expf are scalar calls, which keep LLVM from vectorizing a
# gate loop; at batch 1 an LSTM-128 step spends more time in them than in its
# matrix-vector product. For float32, tanh and sigmoid use the approximations
# TensorFlow itself runs on CPU (Eigen's packet functions), built from +, *, /,
# floor, min/max selects and a bit cast only, so a loop over a block
# vectorizes: tanh Eigen's rational approximation (a few ULP from libm's),
# sigmoid Eigen's exp-based logistic (below). float64 keeps libm: it is the
# precision path.
# Eigen: Eigen/src/Core/MathFunctionsImpl.h, generic_fast_tanh_float.

_TANH_CLAMP = 7.90531110763549805
_A1, _A3, _A5 = 4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05
_A7, _A9 = 5.12229709037114e-08, -8.60467152213735e-11
_A11, _A13 = 2.00018790482477e-13, -2.76076847742355e-16
_B0, _B2 = 4.89352518554385e-03, 2.26843463243900e-03
_B4, _B6 = 1.18534705686654e-04, 1.19825839466702e-06


@njit(cache=True, nogil=True, inline="always", fastmath=FASTMATH_FLAGS, error_model="numpy")
def _tanh_rational_f32(v):
    one = np.float32(1.0)
    x = min(max(v, np.float32(-_TANH_CLAMP)), np.float32(_TANH_CLAMP))
    x2 = x * x
    p = x2 * np.float32(_A13) + np.float32(_A11)
    p = x2 * p + np.float32(_A9)
    p = x2 * p + np.float32(_A7)
    p = x2 * p + np.float32(_A5)
    p = x2 * p + np.float32(_A3)
    p = x2 * p + np.float32(_A1)
    p = x * p
    q = x2 * np.float32(_B6) + np.float32(_B4)
    q = x2 * q + np.float32(_B2)
    q = x2 * q + np.float32(_B0)
    r = p / q
    # |x| < 4e-4: tanh(x) = x to float32 precision; the rational form loses ULPs there.
    r = x if abs(x) < np.float32(0.0004) else r
    # NaN must propagate: min/max above may turn it into a clamp bound.
    return r if v == v else v * one


# float32 sigmoid: Eigen's scalar_logistic_op<float>::packetOp, which is what
# TensorFlow's Sigmoid kernel (tf.math.sigmoid, Keras 3's sigmoid on the TF
# backend) runs on CPU (Eigen/src/Core/functors/UnaryFunctors.h in TF 2.21's
# headers). It computes e = exp(x) as exp(x/2)^2 -- Cephes range reduction
# x/2 = m ln2 + r, a degree-5 polynomial for exp(r), 2^m built from its
# exponent bits -- and returns e / (1 + e), with x clamped at 16.6355324 (the
# first point where that is exactly 1.0) and 0 below x = -104. So it is 1.0
# from x = 16.6355324 on and exp(x)-accurate in the negative tail (worst case
# 4.5 ULP), where the former 0.5 * tanh(0.5 x) + 0.5 stopped at 1 - 1.19e-7 and
# 1.19e-7: saturated LSTM/GRU gates leaked state (1e-4..1e-3 off Keras after
# 5,000 steps). TensorFlow also runs its ops with denormals flushed to zero,
# so its sigmoid is 0 wherever exp(x) < FLT_MIN (x < -87.34); that flush is
# done here with one select (denormal gates would also slow the cell down).
# Measured against tf.math.sigmoid (TF 2.21, 2,000,001 float32 points in
# [-120, 120] plus +-inf, NaN, +-0): bit-identical where no multiply-add is
# contracted into an FMA; with fastmath "contract" on an FMA CPU, 0.4% of the
# points differ, by at most 4 ULP (tests/kernels/test_kernels.py).
_LOGISTIC_HI = 16.6355324
_LOGISTIC_LO = -104.0
_LOG2EF = 1.44269504088896341
_EXP_C1, _EXP_C2 = -0.693359375, 2.12194440e-4
_EXP_P2, _EXP_P3 = 0.49999141693115234375, 0.16666877269744873046875
_EXP_P4, _EXP_P5 = 4.1898667812347412109375e-2, 8.33471305668354034423828125e-3
_FLT_MIN = 1.1754943508222875e-38


@intrinsic
def _exp2_biased_f32(typingctx, biased):
    """2 ** (biased - 127) for a float32 ``biased`` holding an integer in [0, 255]:
    the float32 whose exponent bits are ``biased`` (Eigen's pldexp_fast)."""
    if biased != types.float32:
        return None

    def codegen(context, builder, signature, args):
        bits = builder.fptosi(args[0], ir.IntType(32))
        bits = builder.shl(bits, ir.Constant(ir.IntType(32), 23))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(types.float32), codegen


@njit(cache=True, nogil=True, inline="always", fastmath=FASTMATH_FLAGS, error_model="numpy")
def _sigmoid_eigen_f32(v):
    f = np.float32
    one, half = f(1.0), f(0.5)
    x = v if v < f(_LOGISTIC_HI) else f(_LOGISTIC_HI)  # NaN -> the clamp; restored below
    x = x * half  # exp(x) = exp(x / 2) ** 2: exp(x / 2) stays a normal number
    m = np.floor(x * f(_LOG2EF) + half)
    r = m * f(_EXP_C1) + x
    r = m * f(_EXP_C2) + r
    r2 = r * r
    p_even = r2 * f(_EXP_P4) + f(_EXP_P2)
    p_odd = r2 * f(_EXP_P5) + f(_EXP_P3)
    p = r * p_odd + p_even
    p = r2 * p + (r + one)
    biased = m + f(127.0)  # 2^m from its exponent bits, m + 127 clamped to [0, 255]
    biased = biased if biased > f(0.0) else f(0.0)
    biased = biased if biased < f(255.0) else f(255.0)
    # np.float32(): a float64 caller types this dead branch too (activate_block).
    e = p * _exp2_biased_f32(f(biased))
    e = e * e
    s = e / (one + e)
    # 0 below x = -104 (Eigen's zero mask; there e may be garbage) and where TF's
    # flush-to-zero makes exp(x) 0 (x < -87.34).
    s = s if v >= f(_LOGISTIC_LO) else f(0.0)
    s = s if e >= f(_FLT_MIN) else f(0.0)
    return s if v == v else v  # NaN propagates


def is_float32(a):
    """True for a float32 array; resolved when Numba compiles the caller."""
    return a.dtype == np.float32


@overload(is_float32)
def _is_float32_overload(a):
    if a.dtype == types.float32:
        return lambda a: True
    return lambda a: False


@njit(cache=True, nogil=True, fastmath=FASTMATH_FLAGS, error_model="numpy")
def activate_block(a, code):
    """``a[:] = apply(code, a)`` over a 1-D contiguous block, vectorized where it can be.

    The switch on ``code`` sits outside the loops, so each loop body is one
    straight-line function that LLVM can vectorize.
    """
    n = a.shape[0]
    if is_float32(a):
        if code == TANH:
            for j in range(n):
                a[j] = _tanh_rational_f32(a[j])
            return
        if code == SIGMOID:
            for j in range(n):
                a[j] = _sigmoid_eigen_f32(a[j])
            return
    if code == LINEAR:
        return
    if code == HARD_SIGMOID:
        for j in range(n):
            a[j] = min(max(a[j] / 6.0 + 0.5, 0.0), 1.0)
        return
    if code == RELU:
        for j in range(n):
            a[j] = max(a[j], 0.0)
        return
    for j in range(n):
        a[j] = apply(code, a[j])
