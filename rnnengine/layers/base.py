"""The Layer base class: config and weights; the math is delegated to kernels.

A layer is built for an input shape (without the batch axis), holds its weights
in Keras's layout and ``get_weights()`` order, and runs through two methods a
model calls with buffers from its workspace:

- ``buffer_spec(B, input_shape, input_dtype)`` -> ``{name: (shape, dtype)}``
- ``forward(buffers, x, training=False)`` -> the output, a view into ``buffers``

Weights are replaced as one tuple (``self._packed``), so a call that has read
the tuple computes with one consistent set even if ``set_weights`` runs
concurrently.
"""
import re
import threading

import numpy as np

from .. import _validation
from ..workspace import Workspace

_name_lock = threading.Lock()
_name_counts = {}

# Keras 2 / Keras 3 keyword arguments every layer accepts.
_BASE_KWARGS = ("name", "dtype", "trainable", "input_shape", "input_dim", "batch_input_shape",
                "batch_size", "input_length")


def unique_name(base):
    with _name_lock:
        n = _name_counts.get(base, 0)
        _name_counts[base] = n + 1
    return base if n == 0 else f"{base}_{n}"


def snake_case(name):
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower().replace("simple_r_n_n", "simple_rnn")


def _dtype_name(dtype):
    if isinstance(dtype, dict):  # Keras 3 DTypePolicy config
        dtype = dtype.get("config", {}).get("name", "float32")
    if dtype is None:
        return "float32"
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name in ("mixed_float16", "mixed_bfloat16", "float16", "bfloat16"):
        raise ValueError(f"dtype {name!r} is not supported: rnnengine computes in float32 or float64.")
    if name not in ("float32", "float64"):
        raise ValueError(f"dtype {name!r} is not supported: rnnengine computes in float32 or float64.")
    return name


class Layer:
    """Base class of every rnnengine layer (Keras's ``keras.layers.Layer``)."""

    def __init__(self, name=None, dtype=None, trainable=True, input_shape=None, input_dim=None,
                 batch_input_shape=None, batch_size=None, input_length=None, **kwargs):
        if kwargs:
            raise TypeError(
                f"Unrecognized keyword arguments passed to {type(self).__name__}: {kwargs}"
            )
        self.name = name or unique_name(snake_case(type(self).__name__))
        self.dtype = _dtype_name(dtype)
        self.trainable = bool(trainable)
        # Keras 2 style shape hints on the first layer of a Sequential.
        if batch_input_shape is not None:
            batch_size, input_shape = batch_input_shape[0], tuple(batch_input_shape[1:])
        elif input_shape is None and input_dim is not None:
            input_shape = (input_length, input_dim) if self._takes_sequences else (input_dim,)
        self._input_shape_hint = None if input_shape is None else tuple(input_shape)
        self._batch_size_hint = batch_size
        self.built = False
        self.input_shape = None
        self._weight_specs = []  # [(name, shape)] in get_weights() order
        self._values = []
        self._eager_ws = {}

    _takes_sequences = False

    # -- building -----------------------------------------------------------------
    def build(self, input_shape):
        self.input_shape = tuple(input_shape)
        self.built = True

    def _add_weight(self, name, shape, initializer):
        self._weight_specs.append((name, tuple(shape)))
        self._values.append(np.ascontiguousarray(initializer(tuple(shape), self.dtype), dtype=self.dtype))

    def _finish_build(self, input_shape):
        self.input_shape = tuple(input_shape)
        self.built = True
        self._pack()

    def _pack(self):
        """Derive what the kernels read from ``self._values``; override to prepack."""
        self._packed = tuple(self._values)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    @property
    def output_shape(self):
        if self.input_shape is None:
            raise AttributeError(f"The layer \"{self.name}\" has never been called and thus has no defined output shape.")
        return (None,) + tuple(self.compute_output_shape(self.input_shape))

    # -- weights --------------------------------------------------------------------
    @property
    def weights(self):
        return list(self._values)

    def get_weights(self):
        return [v.copy() for v in self._values]

    def set_weights(self, weights):
        if not self.built:
            raise ValueError(
                f"Layer \"{self.name}\" is not built yet: give the model an input shape "
                "(Input(shape=...) or input_shape=) before set_weights."
            )
        weights = list(weights)
        if len(weights) != len(self._weight_specs):
            raise ValueError(
                f"Layer \"{self.name}\" expects {len(self._weight_specs)} weights "
                f"({', '.join(n for n, _ in self._weight_specs) or 'none'}), but received "
                f"{len(weights)} input weights."
            )
        new = []
        for (wname, shape), w in zip(self._weight_specs, weights):
            w = np.asarray(w)
            if w.dtype.kind not in "fiub":
                raise TypeError(f"Layer \"{self.name}\" weight \"{wname}\" has dtype {w.dtype}; expected a float array.")
            if tuple(w.shape) != shape:
                raise ValueError(
                    f"Layer \"{self.name}\" weight shape mismatch for \"{wname}\": expected shape "
                    f"{shape}, received {tuple(w.shape)}."
                )
            new.append(np.array(w, dtype=self.dtype, order="C", copy=True))
        self._values = new
        self._pack()

    def count_params(self):
        return int(sum(int(np.prod(s)) for _, s in self._weight_specs))

    # -- running ----------------------------------------------------------------------
    def buffer_spec(self, B, input_shape, input_dtype):
        return {}

    def forward(self, buffers, x, training=False):
        raise NotImplementedError

    def _cast_input(self, buffers, x):
        """x in this layer's dtype, using the preallocated ``x_cast`` buffer if needed."""
        if x.dtype == self.dtype:
            return x
        out = buffers["x_cast"]
        np.copyto(out, x, casting="unsafe")
        return out

    def _cast_spec(self, B, input_shape, input_dtype):
        if np.dtype(input_dtype) == np.dtype(self.dtype):
            return {}
        return {"x_cast": ((B,) + tuple(input_shape), self.dtype)}

    def _expected_input_shape(self):
        return self.input_shape if self.built else self._input_shape_hint

    def __call__(self, x, training=False, **kwargs):
        """Run the layer eagerly on a NumPy array, as a Keras layer does on a tensor."""
        expected = self._expected_input_shape()
        x = np.asarray(x) if not isinstance(x, np.ndarray) else x
        if expected is None:
            if x.ndim < 1:
                raise ValueError(f"Layer \"{self.name}\" needs an input with a batch axis; received a scalar.")
            expected = (None,) * (x.ndim - 1)
        x = _validation.as_input_array(x, self.dtype, self.name, expected)
        if not self.built:
            self.build(self._build_shape(x.shape[1:]))
        return self._eager(x, training=training, **kwargs)

    def _build_shape(self, shape):
        hint = self._input_shape_hint
        if hint is not None and len(hint) == len(shape):
            return tuple(h if h is not None else None for h in hint)
        return tuple(shape) if not self._takes_sequences else (None,) + tuple(shape[1:])

    def _eager_workspace(self, x):
        key = (x.shape, x.dtype.str)
        ws = self._eager_ws.get(key)
        if ws is None:
            ws = Workspace(self.buffer_spec(x.shape[0], x.shape[1:], x.dtype))
            self._eager_ws = {key: ws}  # keep only the latest shape
        return ws

    def _eager(self, x, training=False, **kwargs):
        ws = self._eager_workspace(x)
        return np.array(self.forward(ws.views, x, training=training, **kwargs), copy=True)

    # -- config --------------------------------------------------------------------------
    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable, "dtype": self.dtype}
        if self._input_shape_hint is not None:
            config["input_shape"] = self._input_shape_hint
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"
