"""Sequential: a linear stack of layers, Keras's ``keras.Sequential``.

A call flows ``predict`` -> ``_validate`` (once per call: rank, feature size,
dtype, layout) -> a workspace for this (batch, input shape, dtype) from the
pool -> ``layer.forward(buffers, x)`` for each layer -> the kernel the layer
picks -> the last layer's output copied into the returned array (or ``out``).

Design: workspaces are per call, not per model: each in-flight call takes one
from ``WorkspacePool`` and gives it back, so concurrent ``predict`` calls from
several threads never share scratch memory, and the lock is held only to pop
and push, never while kernels run. Stateful layers carry state on the layer,
so a stateful model is single-owner (one thread at a time).
"""
import numpy as np

from .. import _validation
from ..layers.base import Layer, unique_name
from ..layers.core import InputLayer, KerasTensor
from ..workspace import Workspace, WorkspacePool

_KERAS_PREDICT_BATCH_SIZE = 32


class Sequential:
    """A stack of layers run one after another.

    Parameters
    ----------
    layers : list, optional
        Layers to add, the first optionally an ``Input(shape=...)`` or carrying
        ``input_shape=`` (Keras 2 style).
    name : str, optional
    """

    def __init__(self, layers=None, name=None, trainable=True):
        self.name = name or unique_name("sequential")
        self.trainable = trainable
        self._input_layer = None
        self._layers = []
        self.built = False
        self._pool = WorkspacePool(self._make_workspace)
        for layer in layers or ():
            self.add(layer)

    # -- structure ----------------------------------------------------------------
    def add(self, layer):
        """Append a layer (or an ``Input``) to the top of the stack."""
        if isinstance(layer, KerasTensor):
            if getattr(layer, "input_layer", None) is None:
                raise TypeError("Only an Input() tensor or a layer can be added to a Sequential model.")
            layer = layer.input_layer
        if isinstance(layer, InputLayer):
            if self._layers or self._input_layer is not None:
                raise ValueError("An Input/InputLayer can only be the first element of a Sequential model.")
            self._input_layer = layer
        elif isinstance(layer, Layer):
            if getattr(layer, "return_state", False):
                raise ValueError(
                    f"Layer \"{layer.name}\" has return_state=True, which a Sequential model cannot "
                    "pass on: it returns several tensors. Use the functional Model instead."
                )
            if any(l.name == layer.name for l in self._layers):
                raise ValueError(f"All layers added to a Sequential model should have unique names. "
                                 f"Name \"{layer.name}\" is already the name of a layer in this model.")
            self._layers.append(layer)
        else:
            raise TypeError(
                "Only instances of rnnengine.layers.Layer can be added to a Sequential model. "
                f"Received: {layer!r} (of type {type(layer).__name__})"
            )
        self.built = False
        self._pool.clear()

    def pop(self):
        if not self._layers:
            raise TypeError("There are no layers in the model.")
        layer = self._layers.pop()
        self.built = False
        self._pool.clear()
        return layer

    @property
    def layers(self):
        return list(self._layers)

    def get_layer(self, name=None, index=None):
        if index is not None:
            return self._layers[index]
        for layer in self._layers:
            if layer.name == name:
                return layer
        raise ValueError(f"No such layer: {name}. Existing layers are: {[l.name for l in self._layers]}.")

    def _declared_input(self):
        """(shape without batch, batch size) from Input or the first layer's hints."""
        if self._input_layer is not None:
            return self._input_layer.shape, self._input_layer.batch_size
        if self._layers and self._layers[0]._input_shape_hint is not None:
            return self._layers[0]._input_shape_hint, self._layers[0]._batch_size_hint
        return None, None

    def build(self, input_shape=None):
        """Build every layer; ``input_shape`` includes the batch axis, as in Keras."""
        if input_shape is not None:
            shape = tuple(input_shape[1:])
        else:
            shape, _ = self._declared_input()
            if shape is None:
                raise ValueError(
                    f"Model \"{self.name}\" has no input shape: start it with Input(shape=...), pass "
                    "input_shape= to its first layer, or call build(input_shape)."
                )
        if not self._layers:
            raise ValueError(f"Model \"{self.name}\" has no layers.")
        self._input_shape = tuple(shape)
        for layer in self._layers:
            if not layer.built:
                layer.build(shape)
            elif layer.input_shape[-1] != shape[-1]:
                raise ValueError(
                    f"Layer \"{layer.name}\" was built for inputs of shape "
                    f"{_validation.format_shape((None,) + layer.input_shape)} but receives "
                    f"{_validation.format_shape((None,) + tuple(shape))} in model \"{self.name}\"."
                )
            shape = layer.compute_output_shape(shape)
        self._first_dtype = self._layers[0]._input_dtype()
        self.built = True
        self._pool.clear()

    def _ensure_built(self, x_shape=None):
        if self.built:
            return
        shape, _ = self._declared_input()
        if shape is None and x_shape is not None:
            # Keras builds an input-less model on its first batch: free sequence axis.
            shape = tuple(x_shape[1:])
            if len(shape) == 2 and getattr(self._layers[0], "_takes_sequences", False):
                shape = (None, shape[1])
        self.build((None,) + tuple(shape) if shape is not None else None)

    @property
    def input_shape(self):
        self._ensure_built()
        return (None,) + self._input_shape

    @property
    def output_shape(self):
        return (None,) + self._output_shape(self.input_shape[1:])

    def _output_shape(self, shape):
        for layer in self._layers:
            shape = layer.compute_output_shape(shape)
        return tuple(shape)

    # -- workspaces --------------------------------------------------------------------
    def _make_workspace(self, key):
        B, shape, dtype = key
        spec, layer_keys = {}, []
        for i, layer in enumerate(self._layers):
            for name, entry in layer._node_buffer_spec(B, [shape], [dtype]).items():
                spec[f"{i}/{name}"] = entry
            layer_keys.append(f"{i}/")
            shape, dtype = layer._node_output_shapes([shape])[0], layer.dtype
        ws = Workspace(spec)
        ws.layer_buffers = [ws.subset(k) for k in layer_keys]
        return ws

    def _forward_into(self, x, dest, training=False):
        """Run the stack on one batch ``x`` and copy the result into ``dest``."""
        key = (x.shape[0], x.shape[1:], x.dtype.str)
        ws = self._pool.acquire(key)
        try:
            y, mask = x, None
            for layer, buffers in zip(self._layers, ws.layer_buffers):
                outs, masks = layer._node_forward(buffers, [y], [mask], [], training=training)
                y, mask = outs[0], masks[0]
            np.copyto(dest, y)
        finally:
            self._pool.release(key, ws)

    # -- inference ------------------------------------------------------------------------
    def _validate(self, x):
        if not self._layers:
            raise ValueError(f"Model \"{self.name}\" has no layers.")
        if not isinstance(x, np.ndarray):
            x = np.asarray(x)
        self._ensure_built(x.shape)
        return _validation.as_input_array(x, self._first_dtype, self._layers[0].name, self._input_shape)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None, out=None):
        """Outputs for ``x``, computed in batches of ``batch_size`` (Keras's default 32).

        ``x`` is a NumPy array of shape (samples, ...); see ``rnnengine._validation``
        for the dtype and layout contract. ``out``, if given, must be a
        C-contiguous array of exactly the output's shape and dtype; it is filled
        and returned, and the call allocates no array at all.
        """
        return self._predict(self._validate(x), batch_size, out)

    def _predict(self, x, batch_size, out):
        n = x.shape[0]
        batch_size = _KERAS_PREDICT_BATCH_SIZE if batch_size is None else \
            _validation.positive_int(batch_size, "batch_size", "predict")
        out_shape = (n,) + self._output_shape(x.shape[1:])
        out_dtype = self._layers[-1].dtype
        if out is None:
            out = np.empty(out_shape, dtype=out_dtype)
        else:
            _validation.check_out(out, out_shape, out_dtype)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            self._forward_into(x[start:stop], out[start:stop])
        return out

    def predict_on_batch(self, x, out=None):
        """Outputs for ``x`` as one batch."""
        x = self._validate(x)
        return self._predict(x, x.shape[0], out)

    def __call__(self, x, training=False):
        if training:
            raise NotImplementedError("Calling a Sequential model with training=True needs the training engine.")
        return self.predict_on_batch(x)

    def reset_states(self):
        """Zero the state of every stateful layer."""
        for layer in self._layers:
            if hasattr(layer, "reset_states"):
                layer.reset_states()

    # -- weights ----------------------------------------------------------------------------
    def get_weights(self):
        """Every layer's weights, in layer order, each in Keras's order and shape."""
        if not self.built:
            shape, _ = self._declared_input()
            if shape is None:
                return []
            self.build()
        return [w for layer in self._layers for w in layer.get_weights()]

    def set_weights(self, weights):
        if not self.built:
            self._ensure_built()
        weights = list(weights)
        expected = sum(len(layer._weight_specs) for layer in self._layers)
        if len(weights) != expected:
            raise ValueError(
                f"You called `set_weights(weights)` on model \"{self.name}\" with a weight list of "
                f"length {len(weights)}, but the model was expecting {expected} weights."
            )
        start = 0
        for layer in self._layers:
            n = len(layer._weight_specs)
            layer.set_weights(weights[start:start + n])
            start += n

    @property
    def weights(self):
        return [w for layer in self._layers for w in layer.weights]

    def count_params(self):
        self._ensure_built()
        return sum(layer.count_params() for layer in self._layers)

    def summary(self, print_fn=None):
        """Print a Keras-style table of layers, output shapes and parameter counts."""
        self._ensure_built()
        print_fn = print_fn or print
        rows = [("Layer (type)", "Output Shape", "Param #")]
        shape = self._input_shape
        for layer in self._layers:
            shape = layer.compute_output_shape(shape)
            rows.append((f"{layer.name} ({type(layer).__name__})",
                         _validation.format_shape((None,) + tuple(shape)), f"{layer.count_params():,}"))
        widths = [max(len(r[i]) for r in rows) + 2 for i in range(3)]
        line = "-" * sum(widths)
        lines = [f'Model: "{self.name}"', line]
        for k, row in enumerate(rows):
            lines.append(row[0].ljust(widths[0]) + row[1].ljust(widths[1]) + row[2].rjust(widths[2]))
            if k == 0:
                lines.append("=" * sum(widths))
        total = self.count_params()
        trainable = sum(l.count_params() for l in self._layers if l.trainable)
        lines += [line, f" Total params: {total:,}", f" Trainable params: {trainable:,}",
                  f" Non-trainable params: {total - trainable:,}", line]
        for text in lines:
            print_fn(text)

    def get_config(self):
        layers = []
        if self._input_layer is not None:
            layers.append({"class_name": "InputLayer", "config": self._input_layer.get_config()})
        layers += [{"class_name": type(l).__name__, "config": l.get_config()} for l in self._layers]
        return {"name": self.name, "layers": layers}

    def __repr__(self):
        return f"<Sequential name={self.name}, layers={[l.name for l in self._layers]}>"
