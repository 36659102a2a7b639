"""``rnnengine.constraints``: Keras 3's weight constraints (``keras.constraints``).

A constraint maps a weight to its projection; training applies it after every
optimizer update, as Keras 3's ``BaseOptimizer.apply`` does (``variable.assign(
variable.constraint(variable))`` for each trainable variable, after the update
step). The math is ``keras/src/constraints/constraints.py`` (Keras 3.15), in the
weight's dtype, with ``epsilon = 1e-7`` (``keras.config.epsilon()``):

- ``MaxNorm(max_value=2, axis=0)``: ``w * clip(n, 0, max_value) / (eps + n)``;
- ``NonNeg()``: ``maximum(w, 0)``;
- ``UnitNorm(axis=0)``: ``w / (eps + n)``;
- ``MinMaxNorm(min_value=0.0, max_value=1.0, rate=1.0, axis=0)``:
  ``w * (rate * clip(n, min_value, max_value) + (1 - rate) * n) / (eps + n)``;

where ``n = sqrt(sum(square(w), axis, keepdims=True))``. ``axis`` is Keras's
(an int or a list of ints): with the default 0, each column of a kernel
(input_dim, units) -- the weights into one unit -- is normalized; a 1-D bias is
normalized as a whole; GRU's (2, 3*units) bias per column.

``get`` takes names as Keras 3 does (``"max_norm"``, ``"non_neg"``,
``"unit_norm"``, ``"min_max_norm"`` and the class names), a serialized dict, an
instance, a class, or any callable ``w -> new w``.
"""
import numpy as np

from ._keras_objects import Registry

__all__ = ["Constraint", "MaxNorm", "NonNeg", "UnitNorm", "MinMaxNorm", "get", "serialize", "deserialize"]

_EPSILON = 1e-7


def _axis(axis):
    return tuple(axis) if isinstance(axis, (list, tuple)) else axis


def _norms(w, axis):
    return np.sqrt(np.sum(np.square(w), axis=_axis(axis), keepdims=True))


class Constraint:
    """Base class: ``__call__(w)`` returns the constrained weight (the identity here)."""

    def __call__(self, w):
        return w

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash(type(self).__name__)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class MaxNorm(Constraint):
    """Norm of the weights along ``axis`` at most ``max_value``."""

    def __init__(self, max_value=2, axis=0):
        self.max_value = max_value
        self.axis = axis

    def __call__(self, w):
        w = np.asarray(w)
        t = w.dtype.type
        norms = _norms(w, self.axis)
        desired = np.clip(norms, t(0), t(self.max_value))
        return w * (desired / (t(_EPSILON) + norms))

    def get_config(self):
        return {"max_value": self.max_value, "axis": self.axis}


class NonNeg(Constraint):
    """Weights at least 0."""

    def __call__(self, w):
        w = np.asarray(w)
        return np.maximum(w, w.dtype.type(0))


class UnitNorm(Constraint):
    """Norm of the weights along ``axis`` equal to 1."""

    def __init__(self, axis=0):
        self.axis = axis

    def __call__(self, w):
        w = np.asarray(w)
        return w / (w.dtype.type(_EPSILON) + _norms(w, self.axis))

    def get_config(self):
        return {"axis": self.axis}


class MinMaxNorm(Constraint):
    """Norm of the weights along ``axis`` moved (by ``rate``) into [min_value, max_value]."""

    def __init__(self, min_value=0.0, max_value=1.0, rate=1.0, axis=0):
        self.min_value = min_value
        self.max_value = max_value
        self.rate = rate
        self.axis = axis

    def __call__(self, w):
        w = np.asarray(w)
        t = w.dtype.type
        norms = _norms(w, self.axis)
        desired = t(self.rate) * np.clip(norms, t(self.min_value), t(self.max_value)) + \
            t(1 - self.rate) * norms
        return w * (desired / (t(_EPSILON) + norms))

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value, "rate": self.rate, "axis": self.axis}


class KerasConfigConstraint(Constraint):
    """A Keras constraint rnnengine does not implement (a custom class), read from a
    model file: kept as its config so that the model runs and saves back
    unchanged; training refuses it."""

    trainable = False

    def __init__(self, entry):
        self.entry = dict(entry)

    def __call__(self, w):
        raise NotImplementedError(f"rnnengine cannot apply the Keras constraint {self.entry.get('class_name')!r}.")

    def get_config(self):
        return dict(self.entry.get("config") or {})

    def __repr__(self):
        return f"<Keras constraint {self.entry.get('class_name')!r} (not computable by rnnengine)>"


_CLASSES = {"Constraint": Constraint, "MaxNorm": MaxNorm, "NonNeg": NonNeg, "UnitNorm": UnitNorm,
            "MinMaxNorm": MinMaxNorm}
_NAMES = dict(_CLASSES)
_NAMES.update({"constraint": Constraint, "max_norm": MaxNorm, "non_neg": NonNeg, "unit_norm": UnitNorm,
               "min_max_norm": MinMaxNorm})


_REGISTRY = Registry("constraint", "keras.constraints", Constraint, _CLASSES, _NAMES, KerasConfigConstraint, base_usable=True)


def serialize(constraint):
    """Keras 3's serialized form: ``{"module", "class_name", "config", "registered_name"}``."""
    return _REGISTRY.serialize(constraint)


def deserialize(config, lenient=False):
    """A constraint from Keras's serialized dict (or a bare ``{"class_name", "config"}``);
    ``lenient``: a class rnnengine does not implement becomes a ``KerasConfigConstraint``
    (what the model importer wants) instead of raising."""
    return _REGISTRY.deserialize(config, lenient)


def get(identifier):
    """A constraint from ``None``, a name, a serialized dict, an instance, a class or a callable."""
    return _REGISTRY.get(identifier)


def can_train(constraint):
    return constraint is None or getattr(constraint, "trainable", True)
