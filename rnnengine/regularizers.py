"""``rnnengine.regularizers``: Keras 3's weight and activity regularizers (``keras.regularizers``).

A regularizer maps a tensor to a scalar penalty that training adds to the loss
(``keras/src/regularizers/regularizers.py``, Keras 3.15):

- ``L1(l1=0.01)``: ``l1 * sum(abs(x))``. Keras keeps ``l1`` as a float32 tensor,
  so ``L1(0.01).l1`` (and its ``get_config``) is ``0.009999999776482582``;
  rnnengine keeps the same float32-rounded value.
- ``L2(l2=0.01)``: ``l2 * sum(square(x))``.
- ``L1L2(l1=0.0, l2=0.0)``: the sum of both (a zero factor adds nothing).

Each factor is cast to the tensor's dtype before it multiplies, through float32
as Keras's ``ops.cast`` of a Python float does (a float64 weight is scaled by
``float64(float32(l2))``). By name, ``get``
takes what Keras 3's ``keras.regularizers.get`` takes: ``"l1"``, ``"l2"``,
``"l1l2"`` (and the class names); ``"l1"`` and ``"l2"`` have the defaults
above, ``"l1l2"`` is ``L1L2()`` (both factors 0). Keras 3 does not accept
``"l1_l2"`` (only Keras 2 did, as ``L1L2(0.01, 0.01)``), nor does rnnengine.

How training uses them (``keras/src/layers/layer.py``, ``trainers/trainer.py``):
a weight's regularizer (``kernel_regularizer``, ``recurrent_regularizer``,
``bias_regularizer``, ``embeddings_regularizer``) adds ``reg(weight)`` for every
*trainable* weight; a layer's ``activity_regularizer`` adds
``reg(output) / batch_size`` for each output the layer returns (a recurrent
layer with ``return_state`` regularizes its states too). Keras 3.15's
``SimpleRNN`` accepts ``activity_regularizer`` but never hands it to its base
layer, so Keras applies (and saves) none: rnnengine's SimpleRNN does the same,
with a warning. The loss that
``fit``/``evaluate``/``train_on_batch`` report is the compiled loss plus the sum
of these penalties (weight penalties at the weights before the step's update),
and the gradient includes theirs (``grad``).

Beyond Keras's interface each regularizer has ``grad(x)``, the gradient of its
penalty (TensorFlow's: ``sign(x)`` for ``abs``, ``2 x`` for ``square``). A
custom regularizer trains in rnnengine if it subclasses ``Regularizer`` and
implements ``grad``; a plain function works at inference but training refuses
it.
"""
import math

import numpy as np

from ._keras_objects import Registry

__all__ = ["Regularizer", "L1", "L2", "L1L2", "get", "serialize", "deserialize"]


def _validate_float_arg(value, name):
    if isinstance(value, bool) or not isinstance(value, (float, int, np.floating, np.integer)) or \
            math.isinf(value) or math.isnan(value) or value < 0:
        raise ValueError(f"Invalid value for argument {name}: expected a non-negative float."
                         f"Received: {name}={value}")
    return float(value)


class Regularizer:
    """Base class: ``__call__(x)`` is the penalty (a scalar of ``x``'s dtype),
    ``grad(x)`` its gradient (an array like ``x``)."""

    def __call__(self, x):
        return 0.0

    def grad(self, x):
        return np.zeros_like(x)

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def get_config(self):
        raise NotImplementedError(f"{self} does not implement get_config()")

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _factor(value, dtype):
    """``ops.cast(factor, dtype)`` as Keras does it: a Python float goes through
    float32 first, so a float64 tensor is scaled by the float32-rounded factor."""
    return dtype.type(np.float32(value))


def _sum_abs(x):
    return np.sum(np.abs(x), dtype=x.dtype)


def _sum_square(x):
    return np.sum(np.square(x), dtype=x.dtype)


class L1L2(Regularizer):
    """``l1 * sum(abs(x)) + l2 * sum(square(x))`` (a zero factor's term is left out)."""

    def __init__(self, l1=0.0, l2=0.0):
        l1 = 0.0 if l1 is None else l1
        l2 = 0.0 if l2 is None else l2
        self.l1 = _validate_float_arg(l1, name="l1")
        self.l2 = _validate_float_arg(l2, name="l2")

    def __call__(self, x):
        x = np.asarray(x)
        value = x.dtype.type(0.0)
        if self.l1 != 0.0:
            value = value + _factor(self.l1, x.dtype) * _sum_abs(x)
        if self.l2 != 0.0:
            value = value + _factor(self.l2, x.dtype) * _sum_square(x)
        return value

    def grad(self, x):
        x = np.asarray(x)
        g = np.zeros_like(x)
        if self.l1 != 0.0:
            g += _factor(self.l1, x.dtype) * np.sign(x)
        if self.l2 != 0.0:
            g += _factor(self.l2, x.dtype) * (x * x.dtype.type(2.0))
        return g

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


class L1(Regularizer):
    """``l1 * sum(abs(x))``; ``l1`` is held as float32, as Keras holds it."""

    def __init__(self, l1=0.01):
        l1 = 0.01 if l1 is None else l1
        l1 = _validate_float_arg(l1, name="l1")
        self.l1 = float(np.float32(l1))

    def __call__(self, x):
        x = np.asarray(x)
        return _factor(self.l1, x.dtype) * _sum_abs(x)

    def grad(self, x):
        x = np.asarray(x)
        return _factor(self.l1, x.dtype) * np.sign(x)

    def get_config(self):
        return {"l1": self.l1}


class L2(Regularizer):
    """``l2 * sum(square(x))``."""

    def __init__(self, l2=0.01):
        l2 = 0.01 if l2 is None else l2
        self.l2 = _validate_float_arg(l2, name="l2")

    def __call__(self, x):
        x = np.asarray(x)
        return _factor(self.l2, x.dtype) * _sum_square(x)

    def grad(self, x):
        x = np.asarray(x)
        return _factor(self.l2, x.dtype) * (x * x.dtype.type(2.0))  # TensorFlow's SquareGrad: dy * (2 x)

    def get_config(self):
        return {"l2": self.l2}


class KerasConfigRegularizer(Regularizer):
    """A Keras regularizer rnnengine does not implement (``OrthogonalRegularizer``,
    a custom class), read from a model file: kept as its config so that the model
    runs (inference ignores regularizers) and saves back unchanged; training
    refuses it."""

    trainable = False

    def __init__(self, entry):
        self.entry = dict(entry)

    def __call__(self, x):
        raise NotImplementedError(f"rnnengine cannot compute the Keras regularizer "
                                  f"{self.entry.get('class_name')!r}.")

    grad = __call__

    def get_config(self):
        return dict(self.entry.get("config") or {})

    def __repr__(self):
        return f"<Keras regularizer {self.entry.get('class_name')!r} (not computable by rnnengine)>"


_CLASSES = {"Regularizer": Regularizer, "L1": L1, "L2": L2, "L1L2": L1L2}
_NAMES = dict(_CLASSES)
_NAMES.update({"regularizer": Regularizer, "l1": L1, "l2": L2, "l1l2": L1L2})


_REGISTRY = Registry("regularizer", "keras.regularizers", Regularizer, _CLASSES, _NAMES, KerasConfigRegularizer, base_usable=False)


def serialize(regularizer):
    """Keras 3's serialized form: ``{"module", "class_name", "config", "registered_name"}``."""
    return _REGISTRY.serialize(regularizer)


def deserialize(config, lenient=False):
    """A regularizer from Keras's serialized dict (or a bare ``{"class_name", "config"}``);
    ``lenient``: a class rnnengine does not implement becomes a ``KerasConfigRegularizer``
    (what the model importer wants) instead of raising."""
    return _REGISTRY.deserialize(config, lenient)


def get(identifier):
    """A regularizer from ``None``, a name, a serialized dict, an instance, a class or a callable."""
    return _REGISTRY.get(identifier)


def can_train(regularizer):
    """Whether training can compute ``regularizer``'s penalty and gradient."""
    return regularizer is None or (getattr(regularizer, "trainable", True) and
                                   callable(getattr(regularizer, "grad", None)))
