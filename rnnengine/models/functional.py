"""Model: Keras's functional API over rnnengine layers.

    encoder_inputs = Input(shape=(None, 16))
    _, h, c = LSTM(32, return_state=True)(encoder_inputs)
    decoder_inputs = Input(shape=(None, 8))
    y = LSTM(32, return_sequences=True)(decoder_inputs, initial_state=[h, c])
    model = Model([encoder_inputs, decoder_inputs], Dense(8, activation="softmax")(y))

Calling a layer on a ``KerasTensor`` records a ``Node`` (layers/base.py). The
model walks back from its outputs to its inputs, orders the layers exactly as
Keras does (by depth, then by discovery order: this fixes ``get_weights()``'s
order, so ``set_weights(keras_model.get_weights())`` lines up) and runs the
nodes inputs-first, each on its own buffers in the call's workspace. Masks
(Masking, Embedding(mask_zero=True)) flow along the edges.
"""
import numpy as np

from .. import _validation
from ..layers.base import KerasTensor, unique_name
from ..training import regularization
from ..workspace import Workspace
from .base import BaseModel


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _map_graph(inputs, outputs):
    """Nodes in execution order and layers in Keras's order (Keras 3's ``map_graph``)."""
    node_depth, layer_index, order = {}, {}, []
    finished, in_progress = set(), set()

    input_ids = {id(t) for t in inputs}

    def visit(tensor):
        node = tensor.node
        if node is None:  # a model input
            if id(tensor) not in input_ids:
                raise ValueError(
                    f"Graph disconnected: cannot obtain value for tensor {tensor!r}: it is an Input that "
                    "is not among the model's inputs."
                )
            layer = tensor.input_layer
            layer_index.setdefault(id(layer), (len(layer_index), layer))
            return
        if id(node) in in_progress:
            raise ValueError(f"The graph has a cycle at layer \"{node.layer.name}\".")
        layer_index.setdefault(id(node.layer), (len(layer_index), node.layer))
        if id(node) in finished:
            return
        in_progress.add(id(node))
        for t in node.inputs + node.states:
            visit(t)
        in_progress.discard(id(node))
        finished.add(id(node))
        order.append(node)

    for t in outputs:
        visit(t)
    # Depth as Keras computes it: outputs' nodes 0; a node feeding one of depth d
    # is at least d + 1; all nodes of a layer share the layer's largest depth.
    # Model inputs count as nodes of their InputLayer.
    def key(t):
        return id(t.node) if t.node is not None else ("input", id(t.input_layer))

    node_depth, layer_depth = {}, {}
    for node in reversed(order):
        depth = max(node_depth.get(id(node), 0), layer_depth.get(id(node.layer), 0))
        layer_depth[id(node.layer)] = node_depth[id(node)] = depth
        for t in node.inputs + node.states:
            node_depth[key(t)] = max(depth + 1, node_depth.get(key(t), 0))
    for t in inputs:
        layer_depth[id(t.input_layer)] = node_depth.get(key(t), 0)
    layers = sorted((v for v in layer_index.values()),
                    key=lambda item: (-layer_depth[id(item[1])], item[0]))
    nodes = sorted(order, key=lambda n: -node_depth[id(n)])  # stable: inputs first
    return nodes, [layer for _, layer in layers]


class Model(BaseModel):
    """A graph of layers from ``inputs`` to ``outputs``, as ``keras.Model(inputs, outputs)``.

    Parameters
    ----------
    inputs : KerasTensor or list of KerasTensor
        Tensors returned by ``rnnengine.layers.Input``.
    outputs : KerasTensor or list of KerasTensor
        Tensors produced by calling layers on ``inputs``.
    name : str, optional
    """

    _has_plans = True  # plan.py binds what it can (up to 8 inputs and outputs); else node by node

    def __init__(self, inputs, outputs, name=None, trainable=True):
        super().__init__(name or unique_name("functional"), trainable)
        self.inputs = _as_list(inputs)
        self.outputs = _as_list(outputs)
        self._single_output = not isinstance(outputs, (list, tuple))
        for t in self.inputs:
            if not isinstance(t, KerasTensor) or getattr(t, "input_layer", None) is None:
                raise ValueError(f"Model inputs must come from rnnengine.layers.Input(); received {t!r}")
        for t in self.outputs:
            if not isinstance(t, KerasTensor):
                raise ValueError(f"Model outputs must be tensors from layer calls; received {t!r}")
        self._nodes, self._all_layers = _map_graph(self.inputs, self.outputs)
        self.built = True

    @property
    def layers(self):
        """Every layer, InputLayers included, in Keras's order."""
        return list(self._all_layers)

    def get_layer(self, name=None, index=None):
        if index is not None:
            return self._all_layers[index]
        for layer in self._all_layers:
            if layer.name == name:
                return layer
        raise ValueError(f"No such layer: {name}. Existing layers are: {[l.name for l in self._all_layers]}.")

    @property
    def input_shape(self):
        shapes = [t.shape for t in self.inputs]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def output_shape(self):
        shapes = [t.shape for t in self.outputs]
        return shapes[0] if self._single_output else shapes

    # -- running -----------------------------------------------------------------------------
    def _validate_inputs(self, x):
        if isinstance(x, dict):
            missing = [t.input_layer.name for t in self.inputs if t.input_layer.name not in x]
            if missing:
                raise ValueError(f"Model \"{self.name}\": missing inputs {missing}; received keys {sorted(x)}.")
            x = [x[t.input_layer.name] for t in self.inputs]
        xs = _as_list(x) if len(self.inputs) > 1 or isinstance(x, (list, tuple)) else [x]
        if len(xs) != len(self.inputs):
            raise ValueError(f"Model \"{self.name}\" expects {len(self.inputs)} input(s), but it received "
                             f"{len(xs)} input tensors.")
        arrays = []
        for t, a in zip(self.inputs, xs):
            consumer_dtype = self._input_dtype(t)
            arrays.append(_validation.as_input_array(a, consumer_dtype, t.input_layer.name, t.shape[1:]))
        return arrays

    def _input_dtype(self, tensor):
        """Cast an input once, to what its first consumer computes in."""
        for node in self._nodes:
            if any(t is tensor for t in node.inputs):
                return node.layer._input_dtype()
        return tensor.dtype

    def _tensor_specs(self, input_specs):
        specs = {id(t): (tuple(shape), np.dtype(dtype)) for t, (shape, dtype) in zip(self.inputs, input_specs)}
        for node in self._nodes:
            shapes = [specs[id(t)][0] for t in node.inputs]
            for t, shape in zip(node.outputs, node.layer._node_output_shapes(shapes)):
                specs[id(t)] = (tuple(shape), np.dtype(node.layer.dtype))
        return specs

    def _output_specs(self, input_specs):
        specs = self._tensor_specs(input_specs)
        return [specs[id(t)] for t in self.outputs]

    def _make_workspace(self, key):
        B, input_specs = key[0], [(shape, np.dtype(dtype)) for shape, dtype in key[1:]]
        specs = self._tensor_specs(input_specs)
        spec = {}
        for k, node in enumerate(self._nodes):
            shapes = [specs[id(t)][0] for t in node.inputs]
            dtypes = [specs[id(t)][1] for t in node.inputs]
            for name, entry in node.layer._node_buffer_spec(B, shapes, dtypes).items():
                spec[f"{k}/{name}"] = entry
        ws = Workspace(spec)
        ws.node_buffers = [ws.subset(f"{k}/") for k in range(len(self._nodes))]
        return ws

    def _run(self, ws, arrays, training=False):
        values = {id(t): (a, None) for t, a in zip(self.inputs, arrays)}
        for node, buffers in zip(self._nodes, ws.node_buffers):
            ins = [values[id(t)] for t in node.inputs]
            states = [values[id(t)][0] for t in node.states]
            outs, masks = node.layer._node_forward(buffers, [a for a, _ in ins], [m for _, m in ins], states,
                                                   training=training)
            for t, o, m in zip(node.outputs, outs, masks):
                values[id(t)] = (o, m)
        return [values[id(t)][0] for t in self.outputs]

    # -- training ----------------------------------------------------------------------------
    def _tensor_keys(self):
        """A stable index per tensor (inputs, then node outputs) and how many
        consumers each has (node inputs and states, model outputs)."""
        cached = self.__dict__.get("_tensor_keys_cache")
        if cached is not None:
            return cached
        keys = {id(t): i for i, t in enumerate(self.inputs)}
        for node in self._nodes:
            for t in node.outputs:
                keys.setdefault(id(t), len(keys))
        fanout = dict.fromkeys(keys, 0)
        for node in self._nodes:
            for t in node.inputs + node.states:
                fanout[id(t)] += 1
        for t in self.outputs:
            fanout[id(t)] += 1
        self._tensor_keys_cache = (keys, fanout)
        return keys, fanout

    def _make_train_workspace(self, key):
        B, input_specs = key[0], [(shape, np.dtype(dtype)) for shape, dtype in key[1:]]
        specs = self._tensor_specs(input_specs)
        keys, fanout = self._tensor_keys()
        spec = {}
        for k, node in enumerate(self._nodes):
            shapes = [specs[id(t)][0] for t in node.inputs]
            dtypes = [specs[id(t)][1] for t in node.inputs]
            for name, entry in node.layer._node_train_spec(B, shapes, dtypes).items():
                spec[f"{k}/{name}"] = entry
            out_shapes = [specs[id(t)][0] for t in node.outputs]
            for name, entry in regularization.activity_grad_spec(node.layer, out_shapes, node.layer.dtype,
                                                                 B).items():
                spec[f"{k}/{name}"] = entry
        for tid, count in fanout.items():
            shape, dtype = specs[tid]
            if count > 1 and dtype.kind == "f":
                spec[f"acc/{keys[tid]}"] = ((B,) + tuple(shape), dtype)
        for j, t in enumerate(self.outputs):
            shape, dtype = specs[id(t)]
            spec[f"loss/dy{j}"] = ((B,) + tuple(shape), dtype)
        ws = Workspace(spec)
        ws.node_buffers = [ws.subset(f"{k}/") for k in range(len(self._nodes))]
        ws.loss_grads = [ws[f"loss/dy{j}"] for j in range(len(self.outputs))]
        ws.acc = {tid: ws[f"acc/{keys[tid]}"] for tid in fanout if f"acc/{keys[tid]}" in ws.views}
        ws.fanout = fanout
        ws.values = {}
        return ws

    def _run_train(self, ws, arrays, training=True):
        """Forward in training mode (``training`` False: evaluate), keeping every
        tensor's value and mask in ``ws.values`` for ``_backward``."""
        values = ws.values
        values.clear()
        for t, a in zip(self.inputs, arrays):
            values[id(t)] = (a, None)
        ws.activity_loss = 0.0
        for node, buffers in zip(self._nodes, ws.node_buffers):
            ins = [values[id(t)] for t in node.inputs]
            states = [values[id(t)][0] for t in node.states]
            outs, masks = node.layer._node_forward_train(buffers, [a for a, _ in ins], [m for _, m in ins],
                                                         states, training=training)
            if node.layer.activity_regularizer is not None:
                ws.activity_loss += regularization.activity_penalty(node.layer, outs)
            for t, o, m in zip(node.outputs, outs, masks):
                values[id(t)] = (o, m)
        return [values[id(t)][0] for t in self.outputs], [values[id(t)][1] for t in self.outputs]

    def _logit_node_index(self, k):
        """The node whose Dense/Activation produces output ``k`` when only the loss reads it."""
        t = self.outputs[k]
        if t.node is None or len(t.node.outputs) != 1 or self._tensor_keys()[1][id(t)] != 1:
            return None
        return next(i for i, n in enumerate(self._nodes) if n is t.node)

    def _logit_node(self, ws, k):
        i = self._logit_node_index(k)
        if i is None:
            return None
        node = self._nodes[i]
        return node.layer, ws.node_buffers[i], [ws.values[id(t)][0] for t in node.inputs]

    def _backward(self, ws, douts, dlogits):
        """Gradients from the losses back to the inputs, node by node in reverse;
        a tensor read by several nodes sums their gradients in its accumulator."""
        values, grads = ws.values, {}

        def add(t, d):
            if d is None:
                return
            tid = id(t)
            acc = ws.acc.get(tid)
            if acc is None:
                grads[tid] = d
            elif tid in grads:
                np.add(acc, d, out=acc)
            else:
                np.copyto(acc, d)
                grads[tid] = acc

        logit_nodes = {}
        for j, t in enumerate(self.outputs):
            if dlogits[j] is not None:
                logit_nodes[self._logit_node_index(j)] = dlogits[j]
            else:
                add(t, douts[j])
        for i in range(len(self._nodes) - 1, -1, -1):
            node, buffers = self._nodes[i], ws.node_buffers[i]
            ins = [values[id(t)] for t in node.inputs]
            arrays, masks = [a for a, _ in ins], [m for _, m in ins]
            if i in logit_nodes:
                dins, dstates = node.layer._node_backward_logits(buffers, logit_nodes[i], arrays, masks)
            else:
                node_douts = [grads.get(id(t)) for t in node.outputs]
                if node.layer.activity_regularizer is not None:  # its penalty, on each output
                    node_douts = regularization.add_activity_grads(
                        node.layer, buffers, [values[id(t)][0] for t in node.outputs], node_douts)
                if all(d is None for d in node_douts):
                    continue
                states = [values[id(t)][0] for t in node.states]
                dins, dstates = node.layer._node_backward(buffers, node_douts, arrays, masks, states)
            for t, d in zip(node.inputs, dins):
                add(t, d)
            for t, d in zip(node.states, dstates):
                add(t, d)

    def _output_names(self):
        names = []
        for t in self.outputs:
            layer = t.node.layer if t.node is not None else t.input_layer
            names.append(layer.name)
        return names

    def _output_shapes(self):
        return [tuple(t.shape[1:]) for t in self.outputs]

    def _output_dtypes(self):
        return [np.dtype(t.node.layer.dtype if t.node is not None else t.dtype) for t in self.outputs]

    def _summary_rows(self):
        for layer in self._all_layers:
            shapes = [t.shape[1:] for n in self._nodes if n.layer is layer for t in n.outputs[:1]]
            if not shapes:  # an InputLayer
                shapes = [layer.shape]
            yield layer, shapes

    def get_config(self):
        return {"name": self.name, "layers": [{"class_name": type(l).__name__, "config": l.get_config()}
                                              for l in self._all_layers]}

    def __repr__(self):
        return f"<Model name={self.name}, inputs={len(self.inputs)}, outputs={len(self.outputs)}>"
