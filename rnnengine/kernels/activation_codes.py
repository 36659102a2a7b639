"""Activation int codes, shared by every kernel and by the layers.

Plain constants, no Numba: the layers and the Cython backend import this module
without paying for Numba. ``_activations.py`` (Numba) and ``src/_gates.pxd``
(Cython) implement the codes.
"""
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
