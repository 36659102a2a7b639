"""Sequential: a linear stack of layers, Keras's ``keras.Sequential``.

How a call flows, and how workspaces are shared between threads: ``base.py``.
"""
import numpy as np

from .. import _validation
from ..layers.base import KerasTensor, Layer, unique_name
from ..training import regularization
from ..layers.core import Embedding, InputLayer
from ..workspace import Workspace
from .base import BaseModel


class Sequential(BaseModel):
    """A stack of layers run one after another.

    Parameters
    ----------
    layers : list, optional
        Layers to add, the first optionally an ``Input(shape=...)`` or carrying
        ``input_shape=`` (Keras 2 style).
    name : str, optional
    """

    _single_output = True
    _has_plans = True  # plan.py: one bound kernel call list per (batch, shape, dtype)

    def __init__(self, layers=None, name=None, trainable=True):
        super().__init__(name or unique_name("sequential"), trainable)
        self._input_layer = None
        self._layers = []
        self.built = False
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
        self._clear_pools()

    def pop(self):
        if not self._layers:
            raise TypeError("There are no layers in the model.")
        layer = self._layers.pop()
        self.built = False
        self._clear_pools()
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
                layer._node_build([shape])
            elif layer.input_shape[-1] != shape[-1]:
                raise ValueError(
                    f"Layer \"{layer.name}\" was built for inputs of shape "
                    f"{_validation.format_shape((None,) + layer.input_shape)} but receives "
                    f"{_validation.format_shape((None,) + tuple(shape))} in model \"{self.name}\"."
                )
            shape = layer._node_output_shapes([shape])[0]
        self._first_dtype = self._layers[0]._input_dtype()
        self.built = True
        self._clear_pools()
        self._output_spec_cache = {}

    def _ensure_built(self, x_shape=None):
        if self.built:
            return
        with self._weights_lock:  # concurrent first calls build the layers once
            if not self.built:
                self._build_from(x_shape)

    def _build_from(self, x_shape):
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
            shape = layer._node_output_shapes([shape])[0]
        return tuple(shape)

    # -- workspaces ----------------------------------------------------------------------
    def _make_workspace(self, key):
        B, (shape, dtype) = key
        spec, layer_keys = {}, []
        for i, layer in enumerate(self._layers):
            for name, entry in layer._node_buffer_spec(B, [shape], [dtype]).items():
                spec[f"{i}/{name}"] = entry
            layer_keys.append(f"{i}/")
            shape, dtype = layer._node_output_shapes([shape])[0], layer.dtype
        ws = Workspace(spec)
        ws.layer_buffers = [ws.subset(k) for k in layer_keys]
        return ws

    def _run(self, ws, arrays, training=False):
        y, mask = arrays[0], None
        for layer, buffers in zip(self._layers, ws.layer_buffers):
            outs, masks = layer._node_forward(buffers, [y], [mask], [], training=training)
            y, mask = outs[0], masks[0]
        return [y]

    def _output_specs(self, input_specs):
        return [(self._output_shape(input_specs[0][0]), self._layers[-1].dtype)]

    # -- training ----------------------------------------------------------------------------
    def _make_train_workspace(self, key):
        B, (shape, dtype) = key
        spec, layer_keys = {}, []
        for i, layer in enumerate(self._layers):
            for name, entry in layer._node_train_spec(B, [shape], [dtype]).items():
                spec[f"{i}/{name}"] = entry
            out_shapes = layer._node_output_shapes([shape])
            for name, entry in regularization.activity_grad_spec(layer, out_shapes, layer.dtype, B).items():
                spec[f"{i}/{name}"] = entry
            layer_keys.append(f"{i}/")
            shape, dtype = out_shapes[0], layer.dtype
        spec["loss/dy0"] = ((B,) + tuple(shape), dtype)
        ws = Workspace(spec)
        ws.layer_buffers = [ws.subset(k) for k in layer_keys]
        ws.loss_grads = [ws["loss/dy0"]]
        ws.records = [None] * len(self._layers)
        return ws

    def _run_train(self, ws, arrays, training=True):
        """Forward in training mode (``training`` False: evaluate), recording each
        layer's input and mask for ``_backward``; returns (outputs, output masks)."""
        y, mask = arrays[0], None
        ws.activity_loss, ws.activity_outs = 0.0, {}
        for i, (layer, buffers) in enumerate(zip(self._layers, ws.layer_buffers)):
            ws.records[i] = (y, mask)
            outs, masks = layer._node_forward_train(buffers, [y], [mask], [], training=training)
            if layer.activity_regularizer is not None:
                ws.activity_loss += regularization.activity_penalty(layer, outs)
                ws.activity_outs[i] = outs
            y, mask = outs[0], masks[0]
        return [y], [mask]

    def _backward(self, ws, douts, dlogits):
        """Gradients from the loss back to the first layer, accumulating weight gradients."""
        last = len(self._layers) - 1
        if dlogits[0] is not None:
            x, mask = ws.records[last]
            dins, _ = self._layers[last]._node_backward_logits(ws.layer_buffers[last], dlogits[0], [x], [mask])
            d, last = dins[0], last - 1
        else:
            d = douts[0]
        for i in range(last, -1, -1):
            if i in ws.activity_outs:  # the layer's activity penalty, on its output
                d = regularization.add_activity_grads(self._layers[i], ws.layer_buffers[i],
                                                      ws.activity_outs[i][:1], [d])[0]
            if d is None:
                break
            x, mask = ws.records[i]
            dins, _ = self._layers[i]._node_backward(ws.layer_buffers[i], [d], [x], [mask], [])
            d = dins[0]

    def _logit_node(self, ws, k):
        i = len(self._layers) - 1
        return self._layers[i], ws.layer_buffers[i], [ws.records[i][0]]

    def _output_names(self):
        return [self._layers[-1].name] if self._layers else ["output"]

    def _output_shapes(self):
        self._ensure_built()
        return [self._output_shape(self._input_shape)]

    def _output_dtypes(self):
        return [np.dtype(self._layers[-1].dtype)]

    def _stream_plan(self):
        from .stream import check_streamable

        self._ensure_built()
        ids = bool(self._layers) and isinstance(self._layers[0], Embedding) and len(self._input_shape) == 1
        if len(self._input_shape) < 2 and not ids:  # token ids into an Embedding: one id per row and step
            raise ValueError(f"Model \"{self.name}\" takes inputs of shape "
                             f"{_validation.format_shape((None,) + self._input_shape)}: a stream needs a "
                             "(batch, time, features) model, or one of token ids into an Embedding.")
        check_streamable(self._layers)
        return self._layers, tuple(self._input_shape[1:])

    # -- inference ------------------------------------------------------------------------
    def _validate_inputs(self, x):
        if (self.built and type(x) is np.ndarray and x.dtype == self._first_dtype and x.flags.c_contiguous
                and x.ndim == len(self._input_shape) + 1 and x.shape[0] > 0
                and all(w is None or w == d for w, d in zip(self._input_shape, x.shape[1:]))
                and 0 not in x.shape):
            return [x]  # already what the kernels take: skip the general checks
        if not self._layers:
            raise ValueError(f"Model \"{self.name}\" has no layers.")
        if isinstance(x, (list, tuple)) and len(x) == 1 and isinstance(x[0], np.ndarray):
            x = x[0]
        if not isinstance(x, np.ndarray):
            x = np.asarray(x)
        self._ensure_built(x.shape)
        return [_validation.as_input_array(x, self._first_dtype, self._layers[0].name, self._input_shape)]

    # -- weights ----------------------------------------------------------------------------
    def get_weights(self):
        if not self.built:
            if self._declared_input()[0] is None:
                return []
            self.build()
        return super().get_weights()

    def set_weights(self, weights):
        self._ensure_built()
        super().set_weights(weights)

    def count_params(self):
        self._ensure_built()
        return super().count_params()

    def _summary_rows(self):
        self._ensure_built()
        shape = self._input_shape
        for layer in self._layers:
            shape = layer._node_output_shapes([shape])[0]
            yield layer, [shape]

    def get_config(self):
        layers = []
        if self._input_layer is not None:
            layers.append({"class_name": "InputLayer", "config": self._input_layer.get_config()})
        layers += [{"class_name": type(l).__name__, "config": l.get_config()} for l in self._layers]
        return {"name": self.name, "layers": layers}

    def __repr__(self):
        return f"<Sequential name={self.name}, layers={[l.name for l in self._layers]}>"
