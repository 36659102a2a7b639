"""Keras activations by name: resolution to the int codes the kernels take.

``get(identifier)`` accepts what Keras accepts for an ``activation=`` argument
that rnnengine can run: a name (``"tanh"``), ``None`` (linear), a Keras config
dict (``{"class_name": "function", "config": "tanh"}`` as Keras 3 saves it) or
one of the functions below (``rnnengine.layers.activations.tanh``). Anything else
raises a ``ValueError`` that names the identifier.
"""
import numpy as np

from ..kernels import activation_codes as codes
from ..kernels.reference import ACTIVATIONS as _NUMPY_FORMS

ALL_CODES = {**codes.ELEMENTWISE_CODES, **codes.ROWWISE_CODES}


def _make(name):
    fn = _NUMPY_FORMS[name]

    def activation(x):
        return fn(np.asarray(x))

    activation.__name__ = name
    activation.__doc__ = f"Keras's ``{name}`` activation on a NumPy array."
    return activation


linear = _make("linear")
tanh = _make("tanh")
sigmoid = _make("sigmoid")
hard_sigmoid = _make("hard_sigmoid")
relu = _make("relu")
elu = _make("elu")
selu = _make("selu")
softplus = _make("softplus")
softsign = _make("softsign")
swish = _make("swish")
silu = swish
gelu = _make("gelu")
exponential = _make("exponential")
relu6 = _make("relu6")
leaky_relu = _make("leaky_relu")
hard_swish = _make("hard_swish")
hard_silu = hard_swish
mish = _make("mish")
softmax = _make("softmax")
log_softmax = _make("log_softmax")


def get(identifier):
    """Canonical activation name for ``identifier``; raises ValueError if unknown."""
    if identifier is None:
        return "linear"
    if isinstance(identifier, dict):
        identifier = identifier.get("config", identifier.get("class_name"))
        if isinstance(identifier, dict):  # {"name": "tanh"} in some configs
            identifier = identifier.get("name")
    if callable(identifier) and getattr(identifier, "__name__", None) in ALL_CODES:
        identifier = identifier.__name__
    if isinstance(identifier, str):
        name = identifier.lower()
        if name in ALL_CODES:
            return {"silu": "swish", "hard_silu": "hard_swish"}.get(name, name)
    raise ValueError(
        f"Could not interpret activation function identifier: {identifier!r}. "
        f"rnnengine supports: {', '.join(sorted(ALL_CODES))}."
    )


def code(name):
    """The kernel's int code for a canonical activation name."""
    return ALL_CODES[name]


def is_elementwise(name):
    return name in codes.ELEMENTWISE_CODES
