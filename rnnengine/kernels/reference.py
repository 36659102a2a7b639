"""Plain NumPy forward passes for every cell: the readable spec and the test oracle.

This version is the clean, minimal reference. As such: it allocates freely, loops
over time in Python, and uses float64-safe NumPy expressions. The fast kernels
(Numba and Cython) must reproduce it; the tests check that, and check this file
against real Keras.

Shapes: x is (B, T, C); kernel is (C, K*H); recurrent_kernel is (H, K*H); states
are (B, H). Gate orders are Keras's: LSTM i, f, c, o; GRU z, r, h.
Returns ``(y, h)`` (or ``(y, h, c)`` for LSTM) where y is (B, T, H) with
``return_sequences`` and (B, H) without; with ``go_backwards`` the steps are
processed from T-1 down to 0 and y keeps processing order, as Keras does.
"""
import numpy as np

try:
    from scipy.special import erf as _erf
except ImportError:  # pragma: no cover - scipy is a runtime dependency
    import math

    _erf = np.vectorize(math.erf)


def _sigmoid(v):
    return 0.5 * (np.tanh(0.5 * v) + 1.0)


def _softplus(v):
    return np.logaddexp(v, 0.0).astype(v.dtype)


def _softmax(v):
    e = np.exp(v - v.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


ACTIVATIONS = {
    "linear": lambda v: v,
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "hard_sigmoid": lambda v: np.clip(v / 6.0 + 0.5, 0.0, 1.0),
    "hard_sigmoid_keras2": lambda v: np.clip(0.2 * v + 0.5, 0.0, 1.0),
    "relu": lambda v: np.maximum(v, 0.0),
    "relu6": lambda v: np.clip(v, 0.0, 6.0),
    "leaky_relu": lambda v: np.where(v >= 0, v, 0.2 * v),
    "elu": lambda v: np.where(v > 0, v, np.expm1(np.minimum(v, 0.0))),
    "selu": lambda v: 1.0507009873554804934193349852946
    * np.where(v > 0, v, 1.6732632423543772848170429916717 * np.expm1(np.minimum(v, 0.0))),
    "softplus": _softplus,
    "softsign": lambda v: v / (1.0 + np.abs(v)),
    "swish": lambda v: v * _sigmoid(v),
    "silu": lambda v: v * _sigmoid(v),
    "hard_swish": lambda v: v * np.clip(v / 6.0 + 0.5, 0.0, 1.0),
    "hard_silu": lambda v: v * np.clip(v / 6.0 + 0.5, 0.0, 1.0),
    "mish": lambda v: v * np.tanh(_softplus(v)),
    "gelu": lambda v: 0.5 * v * (1.0 + _erf(v / np.sqrt(2.0))),
    "exponential": np.exp,
    "softmax": _softmax,
    "log_softmax": lambda v: np.log(_softmax(v)),
}


def _steps(T, go_backwards):
    return range(T - 1, -1, -1) if go_backwards else range(T)


def _collect(outputs, return_sequences):
    return np.stack(outputs, axis=1) if return_sequences else outputs[-1]


def simple_rnn_forward(x, h0, kernel, recurrent_kernel, bias, activation="tanh",
                       go_backwards=False, return_sequences=False):
    act = ACTIVATIONS[activation]
    h = h0.copy()
    outputs = []
    for t in _steps(x.shape[1], go_backwards):
        h = act(x[:, t] @ kernel + bias + h @ recurrent_kernel)
        outputs.append(h)
    return _collect(outputs, return_sequences), h


def lstm_forward(x, h0, c0, kernel, recurrent_kernel, bias, activation="tanh",
                 recurrent_activation="sigmoid", go_backwards=False,
                 return_sequences=False):
    act, ract = ACTIVATIONS[activation], ACTIVATIONS[recurrent_activation]
    H = h0.shape[1]
    h, c = h0.copy(), c0.copy()
    outputs = []
    for t in _steps(x.shape[1], go_backwards):
        z = x[:, t] @ kernel + bias + h @ recurrent_kernel
        i = ract(z[:, :H])
        f = ract(z[:, H:2 * H])
        c = f * c + i * act(z[:, 2 * H:3 * H])
        o = ract(z[:, 3 * H:])
        h = o * act(c)
        outputs.append(h)
    return _collect(outputs, return_sequences), h, c


def gru_forward(x, h0, kernel, recurrent_kernel, bias, activation="tanh",
                recurrent_activation="sigmoid", go_backwards=False,
                return_sequences=False, reset_after=True):
    """``bias`` is Keras's: (2, 3H) [input_bias, recurrent_bias] when
    ``reset_after``, else (3H,)."""
    act, ract = ACTIVATIONS[activation], ACTIVATIONS[recurrent_activation]
    H = h0.shape[1]
    if reset_after:
        input_bias, recurrent_bias = bias[0], bias[1]
    else:
        input_bias, recurrent_bias = bias, np.zeros_like(bias)
    h = h0.copy()
    outputs = []
    for t in _steps(x.shape[1], go_backwards):
        xz = x[:, t] @ kernel + input_bias
        if reset_after:
            inner = h @ recurrent_kernel + recurrent_bias
            z = ract(xz[:, :H] + inner[:, :H])
            r = ract(xz[:, H:2 * H] + inner[:, H:2 * H])
            hh = act(xz[:, 2 * H:] + r * inner[:, 2 * H:])
        else:
            inner = h @ recurrent_kernel[:, :2 * H]
            z = ract(xz[:, :H] + inner[:, :H])
            r = ract(xz[:, H:2 * H] + inner[:, H:])
            hh = act(xz[:, 2 * H:] + (r * h) @ recurrent_kernel[:, 2 * H:])
        h = z * h + (1.0 - z) * hh
        outputs.append(h)
    return _collect(outputs, return_sequences), h


def dense_forward(x, kernel, bias, activation="linear"):
    """x is (..., C); kernel is (C, N); applies to the last axis, as Keras does."""
    y = x @ kernel
    if bias is not None:
        y = y + bias
    return ACTIVATIONS[activation](y)
