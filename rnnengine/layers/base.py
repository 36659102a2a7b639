"""The Layer base class: config and weights; the math is delegated to kernels.

A layer is built for an input shape (without the batch axis), holds its weights
in Keras's layout and ``get_weights()`` order, and runs through two methods a
model calls with buffers from its workspace:

- ``buffer_spec(B, input_shape, input_dtype)`` -> ``{name: (shape, dtype)}``
- ``forward(buffers, x, training=False)`` -> the output, a view into ``buffers``

Weights are replaced as one tuple (``self._packed``), never changed in place
(training aside), so a call that has read the tuple computes with one
consistent set even if ``set_weights`` runs concurrently. A model's call reads
every layer's tuple at once, under the model's weights lock
(``BaseModel._weights_snapshot``), and the layers read theirs through
``_call_packed`` for the rest of the call: no call mixes two layers' old and
new weights.
"""
import re
import threading

import numpy as np

from .. import _validation, constraints, kernels, regularizers
from ..workspace import Workspace

_name_lock = threading.Lock()
_name_counts = {}

# Keras 2 / Keras 3 keyword arguments every layer accepts.
_BASE_KWARGS = ("name", "dtype", "trainable", "input_shape", "input_dim", "batch_input_shape",
                "batch_size", "input_length", "activity_regularizer")

# A weight's regularizer and constraint are the layer attributes
# ``<prefix>_regularizer`` and ``<prefix>_constraint`` (Keras's argument names).
_WEIGHT_ATTR_PREFIX = {"kernel": "kernel", "recurrent_kernel": "recurrent", "bias": "bias",
                       "embeddings": "embeddings"}
REGULARIZER_ATTRS = ("kernel_regularizer", "recurrent_regularizer", "bias_regularizer", "embeddings_regularizer",
                     "activity_regularizer")
CONSTRAINT_ATTRS = ("kernel_constraint", "recurrent_constraint", "bias_constraint", "embeddings_constraint")


def serialize_option(obj, module):
    """A regularizer or constraint for ``get_config``: Keras's serialized dict when
    it has one, else the object itself (a plain function)."""
    if obj is None:
        return None
    try:
        return module.serialize(obj)
    except ValueError:
        return obj


def unique_name(base):
    with _name_lock:
        n = _name_counts.get(base, 0)
        _name_counts[base] = n + 1
    return base if n == 0 else f"{base}_{n}"


def snake_case(name):
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower().replace("simple_r_n_n", "simple_rnn")


def _dtype_name(dtype, allow_int=False):
    if isinstance(dtype, dict):  # Keras 3 DTypePolicy config
        dtype = dtype.get("config", {}).get("name", "float32")
    if dtype is None:
        return "float32"
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name in ("mixed_float16", "mixed_bfloat16", "float16", "bfloat16"):
        raise ValueError(f"dtype {name!r} is not supported: rnnengine computes in float32 or float64.")
    if allow_int and name in ("int32", "int64", "uint8", "int8", "int16", "uint16", "uint32", "bool"):
        return name
    if name not in ("float32", "float64"):
        raise ValueError(f"dtype {name!r} is not supported: rnnengine computes in float32 or float64.")
    return name


# Per thread: the {layer: packed tuple} snapshot of the model call in progress
# on this thread, or None. Thread-local because the weights are read deep in
# the layers (inside wrappers, per step on masked sequences with recurrent
# dropout): one binding reaches them all without a weights argument on every
# forward method.
_call_weights = threading.local()


def bind_call_weights(snapshot):
    """Make the layers read their weights from ``snapshot`` ({layer: packed})
    on this thread (None: their current ones); returns the previous binding,
    to be bound again when the call ends."""
    previous = getattr(_call_weights, "snapshot", None)
    _call_weights.snapshot = snapshot
    return previous


class KerasTensor:
    """A symbolic tensor: shape (batch axis first, None where free), dtype, and the
    node that produces it (``None`` for a model input)."""

    def __init__(self, shape, dtype="float32", name=None, node=None, index=0):
        self.shape = tuple(shape)
        self.dtype = dtype
        self.name = name
        self.node = node
        self.index = index

    @property
    def ndim(self):
        return len(self.shape)

    def __repr__(self):
        return f"<KerasTensor shape={self.shape}, dtype={self.dtype}, name={self.name}>"


class Node:
    """One call of a layer in a graph: its input tensors, initial states and outputs."""

    def __init__(self, layer, inputs, states, outputs=()):
        self.layer = layer
        self.inputs = list(inputs)
        self.states = list(states)
        self.outputs = list(outputs)


def _symbolic_call(layer, inputs, states, mask):
    if mask is not None:
        raise ValueError(f"Layer \"{layer.name}\": pass masks through Masking or Embedding(mask_zero=True), "
                         "not as a call argument, in a graph.")
    for t in inputs + states:
        if not isinstance(t, KerasTensor):
            raise TypeError(f"Layer \"{layer.name}\" mixes symbolic and concrete inputs: {t!r}")
    if layer._multi_input != (len(inputs) > 1 or layer._multi_input):
        raise ValueError(f"Layer \"{layer.name}\" expects one input, received {len(inputs)}.")
    shapes = [t.shape[1:] for t in inputs]
    if not layer.built:
        layer._node_build(shapes)
    node = Node(layer, inputs, states)
    batch = inputs[0].shape[0]
    node.outputs = [KerasTensor((batch,) + tuple(s), layer.dtype, f"{layer.name}/out{i}", node, i)
                    for i, s in enumerate(layer._node_output_shapes(shapes))]
    return node.outputs[0] if len(node.outputs) == 1 else list(node.outputs)


class Layer:
    """Base class of every rnnengine layer (Keras's ``keras.layers.Layer``)."""

    def __init__(self, name=None, dtype=None, trainable=True, input_shape=None, input_dim=None,
                 batch_input_shape=None, batch_size=None, input_length=None, activity_regularizer=None,
                 **kwargs):
        if kwargs:
            raise TypeError(
                f"Unrecognized keyword arguments passed to {type(self).__name__}: {kwargs}"
            )
        self.name = name or unique_name(snake_case(type(self).__name__))
        self.dtype = _dtype_name(dtype)
        # Keras 3: every layer takes one; its penalty on the layer's outputs joins
        # the training loss (``rnnengine/training/regularization.py``).
        self.activity_regularizer = regularizers.get(activity_regularizer)
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
        value = _validation.aligned_empty(tuple(shape), self.dtype)
        _validation.cast_into(value, initializer(tuple(shape), self.dtype))
        self._values.append(value)

    def _finish_build(self, input_shape):
        self.input_shape = tuple(input_shape)
        self.built = True
        self._pack()

    def _pack(self):
        """Derive what the kernels read from ``self._values``; override to prepack."""
        self._packed = tuple(self._values)

    @property
    def _packed(self):
        """The weights as the kernels read them (``_pack``), replaced as one tuple."""
        try:
            return self.__dict__["_packed_weights"]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} \"{self.name}\" has no weights yet") from None

    @_packed.setter
    def _packed(self, value):
        self.__dict__["_packed_weights"] = value
        # After the swap, never before: a fused plan that re-checks on the new
        # epoch must see the new tuple (models/plan.py).
        kernels.bump_epoch()

    def _call_packed(self):
        """The packed weights an inference call computes with: the calling
        model's snapshot when one is bound on this thread, else the current ones."""
        snapshot = getattr(_call_weights, "snapshot", None)
        if snapshot is not None:
            packed = snapshot.get(self)
            if packed is not None:
                return packed
        return self._packed

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
        self._values = self._checked_weights(weights)
        self._pack()

    def _checked_weights(self, weights):
        """``weights`` as this layer's dtype, C-ordered copies, after every check
        (count, dtype, shape); raises before anything is changed."""
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
            copy = _validation.aligned_empty(shape, self.dtype)
            _validation.cast_into(copy, w)  # float64 beyond float32's range: inf, quietly
            new.append(copy)
        return new

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
        _validation.cast_into(out, x)
        return out

    def _cast_spec(self, B, input_shape, input_dtype):
        if np.dtype(input_dtype) == np.dtype(self.dtype):
            return {}
        return {"x_cast": ((B,) + tuple(input_shape), self.dtype)}

    # -- the node protocol: how models and eager calls run a layer ------------------
    # A node is one call of a layer: inputs (several for merge layers), optional
    # initial states (recurrent layers), masks in and out. Sequential, the
    # functional Model and eager calls all go through these four methods.
    supports_masking = False  # passes its input's mask on unchanged
    _multi_input = False  # called with a list of tensors (merge layers)

    def _input_dtype(self):
        return self.dtype

    def _node_build(self, input_shapes):
        self.build(tuple(input_shapes[0]))

    def _node_output_shapes(self, input_shapes):
        return [tuple(self.compute_output_shape(input_shapes[0]))]

    def _node_buffer_spec(self, B, input_shapes, input_dtypes):
        return self.buffer_spec(B, input_shapes[0], input_dtypes[0])

    def _node_forward(self, buffers, inputs, masks, states, training=False):
        """Run one node: returns (outputs, output masks), each a list."""
        y = self.forward(buffers, inputs[0], training=training)
        return [y], [masks[0] if self.supports_masking else None]

    # -- training: the backward half of the node protocol ----------------------------
    # A model in training runs each node through ``_node_forward_train`` (which
    # keeps what the backward reads in the node's buffers), then, in reverse
    # order, ``_node_backward``. Buffers come from ``_node_train_spec``: the
    # forward's, plus saved activations and gradient scratch, allocated once per
    # (batch, shapes) and reused by every batch. Gradients passed between nodes
    # are C-contiguous arrays of the layer's dtype; ``None`` means zero (an output
    # the loss does not reach). Weight gradients are accumulated (``+=``) into
    # ``self._grads``: views, one per weight, of the model's one flat gradient
    # array, laid out like the parameters (``training/params.py``), so that
    # ``zero_grad`` is one ``fill(0)``.
    _grads = None

    def _node_train_spec(self, B, input_shapes, input_dtypes):
        """Buffers of one training node: the forward's plus ``dx<i>`` per float input."""
        spec = dict(self._node_buffer_spec(B, input_shapes, input_dtypes))
        for i, (shape, dtype) in enumerate(zip(input_shapes, input_dtypes)):
            if np.dtype(dtype).kind == "f":
                spec[f"dx{i}"] = ((B,) + tuple(shape), self.dtype)
        return spec

    def _node_forward_train(self, buffers, inputs, masks, states, training=True):
        """Forward of one node in a training pass (``training`` False in
        ``evaluate``), keeping in ``buffers`` what ``_node_backward`` reads."""
        return self._node_forward(buffers, inputs, masks, states, training=training)

    def _node_backward(self, buffers, douts, inputs, masks, states):
        """Gradients of one node: ``douts`` (one per output, ``None`` for zero) in,
        ``(dinputs, dstates)`` out (``None`` where an input takes no gradient);
        weight gradients are added into ``self._grads``."""
        raise NotImplementedError(f"Layer \"{self.name}\" ({type(self).__name__}) has no backward pass: "
                                  "rnnengine cannot train a model that contains it.")

    def _weight_owners(self):
        """The layers that hold this layer's weights in their own ``_values``
        (``[self]``; wrappers return their inner layers)."""
        return [self] if self._weight_specs else []

    def _check_trainable(self, training=True):
        """Raise if this layer's configuration cannot be trained by rnnengine: a
        regularizer without a gradient (a plain function, or a Keras class
        rnnengine does not implement, read from a file) or such a constraint."""
        bad = [k for k in REGULARIZER_ATTRS if not regularizers.can_train(getattr(self, k, None))]
        bad += [k for k in CONSTRAINT_ATTRS if not constraints.can_train(getattr(self, k, None))]
        if bad:
            raise NotImplementedError(
                f"Layer \"{self.name}\" ({type(self).__name__}) sets {', '.join(bad)} to something rnnengine "
                "cannot train with (rnnengine trains with rnnengine.regularizers L1, L2, L1L2 or a Regularizer "
                "subclass with a grad() method, and rnnengine.constraints MaxNorm, NonNeg, UnitNorm, MinMaxNorm "
                "or a callable). Replace them, or train this model in Keras."
            )

    def _weight_regularizer(self, i):
        """The regularizer of weight ``i`` (``kernel_regularizer`` for "kernel", ...), or None."""
        prefix = _WEIGHT_ATTR_PREFIX.get(self._weight_specs[i][0])
        return getattr(self, f"{prefix}_regularizer", None) if prefix else None

    def _weight_constraint(self, i):
        """The constraint of weight ``i``, or None."""
        prefix = _WEIGHT_ATTR_PREFIX.get(self._weight_specs[i][0])
        return getattr(self, f"{prefix}_constraint", None) if prefix else None

    def _after_update(self):
        """Called after the optimizer changed the weights in place: refresh any
        packed copy (views of ``_values`` need nothing)."""

    def _contiguous(self, buffers, name, array):
        """``array`` itself when C-contiguous in this layer's dtype, else a copy in ``buffers[name]``."""
        if array.flags.c_contiguous and array.dtype == self.dtype:
            return array
        out = buffers[name]
        _validation.cast_into(out, array)
        return out

    def __call__(self, inputs, training=False, initial_state=None, mask=None, **kwargs):
        """Call the layer on a symbolic ``Input`` (building a graph, as in Keras's
        functional API) or eagerly on NumPy arrays."""
        if kwargs:
            raise TypeError(f"{type(self).__name__} \"{self.name}\" got unexpected call arguments: {sorted(kwargs)}")
        flat = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        states = list(initial_state) if isinstance(initial_state, (list, tuple)) else \
            ([] if initial_state is None else [initial_state])
        if any(isinstance(t, KerasTensor) for t in flat + states):
            return _symbolic_call(self, flat, states, mask)
        if self._multi_input != isinstance(inputs, (list, tuple)):
            raise ValueError(
                f"Layer \"{self.name}\" expects {'a list of inputs' if self._multi_input else 'one input'}, "
                f"received {type(inputs).__name__}."
            )
        arrays = [self._validate_eager(a, i) for i, a in enumerate(flat)]
        if not self.built:
            self._node_build([self._build_shape(a.shape[1:]) for a in arrays])
        states = [_validation.cast(np.asarray(s), self.dtype) for s in states]
        masks = [None if mask is None else np.asarray(mask, dtype=bool)] * len(arrays)
        ws = self._eager_workspace(arrays)
        outs, _ = self._node_forward(ws.views, arrays, masks, states, training=training)
        outs = [np.array(o, copy=True) for o in outs]
        return outs[0] if len(outs) == 1 else outs

    def _validate_eager(self, x, index):
        expected = self.input_shape if (self.built and not self._multi_input) else self._input_shape_hint
        x = np.asarray(x) if not isinstance(x, np.ndarray) else x
        if expected is None or self._multi_input:
            if x.ndim < 1:
                raise ValueError(f"Layer \"{self.name}\" needs an input with a batch axis; received a scalar.")
            expected = (None,) * (x.ndim - 1)
        return _validation.as_input_array(x, self._input_dtype(), self.name, expected, what=f"Input {index}")

    def _build_shape(self, shape):
        hint = self._input_shape_hint
        if hint is not None and len(hint) == len(shape):
            return tuple(hint)
        return tuple(shape) if not self._takes_sequences else (None,) + tuple(shape[1:])

    def _eager_workspace(self, arrays):
        key = tuple((a.shape, a.dtype.str) for a in arrays)
        ws = self._eager_ws.get(key)
        if ws is None:
            ws = Workspace(self._node_buffer_spec(arrays[0].shape[0], [a.shape[1:] for a in arrays],
                                                  [a.dtype for a in arrays]))
            self._eager_ws = {key: ws}  # keep only the latest shape
        return ws

    # -- config --------------------------------------------------------------------------
    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable, "dtype": self.dtype}
        if self.activity_regularizer is not None:
            config["activity_regularizer"] = serialize_option(self.activity_regularizer, regularizers)
        if self._input_shape_hint is not None:
            config["input_shape"] = self._input_shape_hint
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"
