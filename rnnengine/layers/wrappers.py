"""Layer wrappers: Bidirectional and TimeDistributed, as in Keras.

Bidirectional runs a forward copy and a backward copy (``go_backwards``
flipped) of a recurrent layer, re-reverses the backward sequence so step t of
both lines up, and merges them (concat, sum, ave, mul, or a list for None).
Its weights are the forward layer's then the backward layer's. As in Keras,
masked steps inside it output zeros.

TimeDistributed applies its inner layer to every timestep by folding time into
the batch: (B, T, ...) runs as (B*T, ...), a reshape, not a loop.

Both keep no weights of their own: the inner layers own them (``_values`` is a
read-through property), so training binds and updates the inner layers'
weights, and the backward runs each inner layer's backward and combines the
gradients as the forward combined the outputs.
"""
import numpy as np

from .base import Layer
from .recurrent import _RNN

_MERGE_MODES = ("concat", "sum", "ave", "mul", None)


def _check_inner_activity(wrapper, inner):
    if inner.activity_regularizer is not None:
        raise NotImplementedError(
            f"Layer \"{wrapper.name}\" ({type(wrapper).__name__}) wraps \"{inner.name}\", which sets "
            "activity_regularizer: rnnengine trains activity regularizers on unwrapped layers only (weight "
            "regularizers and constraints inside wrappers are supported). Set it on the wrapper, or train this "
            "model in Keras."
        )


def _clone(layer, **overrides):
    config = layer.get_config()
    config.pop("input_shape", None)
    config.update(overrides)
    return type(layer).from_config(config)


class Bidirectional(Layer):
    """Bidirectional wrapper for SimpleRNN, LSTM and GRU (Keras's ``layers.Bidirectional``)."""

    _takes_sequences = True

    def __init__(self, layer, merge_mode="concat", weights=None, backward_layer=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(layer, _RNN):
            raise ValueError(f"Bidirectional \"{self.name}\" wraps a recurrent layer (SimpleRNN, LSTM, GRU); "
                             f"received {layer!r}")
        if merge_mode not in _MERGE_MODES:
            raise ValueError(f"Invalid merge mode. Received: {merge_mode}. Merge mode should be one of "
                             "{'sum', 'mul', 'ave', 'concat', None}")
        self.merge_mode = merge_mode
        # Keras's names: forward_<name> and backward_<name>, without doubling a prefix.
        base = layer.name.removeprefix("forward_")
        self.forward_layer = _clone(layer, name="forward_" + base)
        if backward_layer is None:
            backward_layer = _clone(layer, name="backward_" + base, go_backwards=not layer.go_backwards)
        elif not isinstance(backward_layer, _RNN) or backward_layer.go_backwards == layer.go_backwards:
            raise ValueError(
                f"Bidirectional \"{self.name}\": backward_layer must be a recurrent layer whose go_backwards "
                "is the opposite of the forward layer's."
            )
        self.backward_layer = backward_layer
        for name in ("return_sequences", "return_state", "stateful"):
            if getattr(self.forward_layer, name) != getattr(backward_layer, name):
                raise ValueError(f"Bidirectional \"{self.name}\": forward and backward layers must have the "
                                 f"same {name}.")
        self.return_sequences = self.forward_layer.return_sequences
        self.return_state = self.forward_layer.return_state
        self.stateful = self.forward_layer.stateful
        for sub in (self.forward_layer, self.backward_layer):
            sub.zero_output_for_mask = self.return_sequences
        self._initial_weights = weights

    @property
    def _values(self):
        if "backward_layer" not in self.__dict__:
            return []
        return self.forward_layer._values + self.backward_layer._values

    @_values.setter
    def _values(self, value):
        pass  # the forward and backward layers own the weights

    def build(self, input_shape):
        for sub in (self.forward_layer, self.backward_layer):
            if not sub.built:
                sub.build(input_shape)
        self._weight_specs = self.forward_layer._weight_specs + self.backward_layer._weight_specs
        self._values = self.forward_layer._values + self.backward_layer._values
        self._finish_build(input_shape)
        if self._initial_weights is not None:
            self.set_weights(self._initial_weights)

    def set_weights(self, weights):
        weights = list(weights)
        n = len(self.forward_layer._weight_specs)
        if len(weights) != len(self._weight_specs):
            raise ValueError(f"Layer \"{self.name}\" expects {len(self._weight_specs)} weights, but received "
                             f"{len(weights)} input weights.")
        self.forward_layer.set_weights(weights[:n])
        self.backward_layer.set_weights(weights[n:])

    def reset_states(self):
        self.forward_layer.reset_states()
        self.backward_layer.reset_states()

    def _n_states(self):
        return len(self.forward_layer._state_names)

    def compute_output_shape(self, input_shape):
        return self._node_output_shapes([input_shape])[0]

    def _node_output_shapes(self, input_shapes):
        f = self.forward_layer._node_output_shapes(input_shapes)
        b = self.backward_layer._node_output_shapes(input_shapes)
        if self.merge_mode == "concat":
            outs = [f[0][:-1] + (f[0][-1] + b[0][-1],)]
        elif self.merge_mode is None:
            outs = [f[0], b[0]]
        else:
            outs = [f[0]]
        return outs + f[1:] + b[1:]

    def _node_buffer_spec(self, B, input_shapes, input_dtypes):
        spec = {}
        for prefix, sub in (("f/", self.forward_layer), ("b/", self.backward_layer)):
            for k, v in sub._node_buffer_spec(B, input_shapes, input_dtypes).items():
                spec[prefix + k] = v
        f_shape = self.forward_layer._node_output_shapes(input_shapes)[0]
        if self.return_sequences:
            spec["reversed"] = ((B,) + tuple(f_shape), self.forward_layer.dtype)
        if self.merge_mode is not None:
            spec["y"] = ((B,) + tuple(self._node_output_shapes(input_shapes)[0]), self.forward_layer.dtype)
        return spec

    def _node_forward(self, buffers, inputs, masks, states, training=False):
        return self._run_both(buffers, inputs, masks, states, training, False)

    def _node_forward_train(self, buffers, inputs, masks, states, training=True):
        return self._run_both(buffers, inputs, masks, states, training, True)

    def _run_both(self, buffers, inputs, masks, states, training, train):
        n = self._n_states()
        if states and len(states) != 2 * n:
            raise ValueError(f"Bidirectional \"{self.name}\" expects {2 * n} initial states (forward then "
                             f"backward), received {len(states)}.")
        sub_bufs = [{k[2:]: v for k, v in buffers.items() if k.startswith(p)} for p in ("f/", "b/")]
        run_f = self.forward_layer._node_forward_train if train else self.forward_layer._node_forward
        run_b = self.backward_layer._node_forward_train if train else self.backward_layer._node_forward
        f_outs, _ = run_f(sub_bufs[0], inputs, masks, states[:n], training)
        b_outs, _ = run_b(sub_bufs[1], inputs, masks, states[n:], training)
        y_f, y_b = f_outs[0], b_outs[0]
        if self.return_sequences:  # line the backward steps up with the forward ones
            np.copyto(buffers["reversed"], y_b[:, ::-1])
            y_b = buffers["reversed"]
        if self.merge_mode is None:
            outs = [y_f, y_b]
        else:
            y = buffers["y"]
            if self.merge_mode == "concat":
                H = y_f.shape[-1]
                np.copyto(y[..., :H], y_f)
                np.copyto(y[..., H:], y_b)
            else:
                with np.errstate(over="ignore", invalid="ignore"):  # inf/NaN propagate, unwarned (merge.py)
                    if self.merge_mode == "sum":
                        np.add(y_f, y_b, out=y)
                    elif self.merge_mode == "ave":
                        np.add(y_f, y_b, out=y)
                        np.multiply(y, 0.5, out=y)
                    else:
                        np.multiply(y_f, y_b, out=y)
            outs = [y]
        out_mask = masks[0] if self.return_sequences else None
        n_main = len(outs)
        outs += f_outs[1:] + b_outs[1:]
        return outs, [out_mask] * n_main + [None] * (len(outs) - n_main)

    # -- training ----------------------------------------------------------------------
    def _weight_owners(self):
        return self.forward_layer._weight_owners() + self.backward_layer._weight_owners()

    def _check_trainable(self, training=True):
        super()._check_trainable(training)
        for sub in (self.forward_layer, self.backward_layer):
            sub._check_trainable(training)
            _check_inner_activity(self, sub)

    def _after_update(self):
        self.forward_layer._after_update()
        self.backward_layer._after_update()

    def _node_train_spec(self, B, input_shapes, input_dtypes):
        spec = {}
        for prefix, sub in (("f/", self.forward_layer), ("b/", self.backward_layer)):
            for k, v in sub._node_train_spec(B, input_shapes, input_dtypes).items():
                spec[prefix + k] = v
        dt = self.forward_layer.dtype
        f_shape = (B,) + tuple(self.forward_layer._node_output_shapes(input_shapes)[0])
        if self.return_sequences:
            spec["reversed"] = (f_shape, dt)
        if self.merge_mode is not None:
            spec["y"] = ((B,) + tuple(self._node_output_shapes(input_shapes)[0]), dt)
        spec.update({"dx0": ((B,) + tuple(input_shapes[0]), dt), "dyf": (f_shape, dt), "dybr": (f_shape, dt),
                     "dyb": (f_shape, dt)})
        return spec

    def _node_backward(self, buffers, douts, inputs, masks, states):
        n = self._n_states()
        sub_bufs = [{k[2:]: v for k, v in buffers.items() if k.startswith(p)} for p in ("f/", "b/")]
        n_main = 2 if self.merge_mode is None else 1
        state_douts = list(douts[n_main:])
        state_douts += [None] * (2 * n - len(state_douts))
        B = inputs[0].shape[0]
        y_f = sub_bufs[0]["y"].reshape(buffers["dyf"].shape)
        y_b = buffers["reversed"] if self.return_sequences else sub_bufs[1]["y"].reshape(buffers["dyb"].shape)
        # forward: y = merge(y_f, y_b), y_b re-reversed in time with return_sequences
        if self.merge_mode is None:
            dyf, dybr = douts[0], douts[1]
        elif douts[0] is None:
            dyf = dybr = None
        else:
            dy = douts[0]
            if self.merge_mode == "concat":
                H = y_f.shape[-1]
                dyf, dybr = buffers["dyf"], buffers["dybr"]
                np.copyto(dyf, dy[..., :H])
                np.copyto(dybr, dy[..., H:])
            elif self.merge_mode == "sum":
                dyf = dybr = dy
            elif self.merge_mode == "ave":
                dyf = dybr = buffers["dyf"]
                np.multiply(dy, 0.5, out=dyf)
            else:
                dyf, dybr = buffers["dyf"], buffers["dybr"]
                np.multiply(dy, y_b, out=dyf)
                np.multiply(dy, y_f, out=dybr)
        dyb = dybr
        if self.return_sequences and dybr is not None:
            dyb = buffers["dyb"]
            np.copyto(dyb, dybr[:, ::-1])
        f_dins, f_dstates = self.forward_layer._node_backward(sub_bufs[0], [dyf] + state_douts[:n], inputs,
                                                              masks, states[:n])
        b_dins, b_dstates = self.backward_layer._node_backward(sub_bufs[1], [dyb] + state_douts[n:], inputs,
                                                               masks, states[n:])
        dx = buffers["dx0"]
        np.add(f_dins[0], b_dins[0], out=dx)
        return [dx], list(f_dstates) + list(b_dstates)

    def get_config(self):
        config = super().get_config()
        config.update(merge_mode=self.merge_mode)
        return config


class TimeDistributed(Layer):
    """Applies ``layer`` to every timestep of a (batch, time, ...) input."""

    supports_masking = True
    _takes_sequences = True

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(layer, Layer) or isinstance(layer, _RNN):
            raise ValueError(f"TimeDistributed \"{self.name}\" wraps a non-recurrent layer; received {layer!r}")
        self.layer = layer

    @property
    def _values(self):
        return self.layer._values if "layer" in self.__dict__ else []

    @_values.setter
    def _values(self, value):
        pass  # the inner layer owns the weights

    def build(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"TimeDistributed \"{self.name}\" needs an input of rank >= 3.")
        if not self.layer.built:
            self.layer._node_build([tuple(input_shape[1:])])
        self._weight_specs = self.layer._weight_specs
        self._finish_build(input_shape)

    def set_weights(self, weights):
        self.layer.set_weights(weights)

    def get_weights(self):
        return self.layer.get_weights()

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(self.layer._node_output_shapes([tuple(input_shape[1:])])[0])

    def _node_buffer_spec(self, B, input_shapes, input_dtypes):
        T = input_shapes[0][0]
        return self.layer._node_buffer_spec(B * T, [tuple(input_shapes[0][1:])], input_dtypes)

    def _node_forward(self, buffers, inputs, masks, states, training=False):
        x = inputs[0]
        B, T = x.shape[:2]
        outs, _ = self.layer._node_forward(buffers, [x.reshape((B * T,) + x.shape[2:])], [None], [], training)
        y = outs[0]
        return [y.reshape((B, T) + y.shape[1:])], [masks[0]]

    # -- training ----------------------------------------------------------------------
    def _weight_owners(self):
        return self.layer._weight_owners()

    def _check_trainable(self, training=True):
        super()._check_trainable(training)
        self.layer._check_trainable(training)
        _check_inner_activity(self, self.layer)

    def _after_update(self):
        self.layer._after_update()

    def _node_train_spec(self, B, input_shapes, input_dtypes):
        T = input_shapes[0][0]
        return self.layer._node_train_spec(B * T, [tuple(input_shapes[0][1:])], input_dtypes)

    def _node_forward_train(self, buffers, inputs, masks, states, training=True):
        x = inputs[0]
        B, T = x.shape[:2]
        outs, _ = self.layer._node_forward_train(buffers, [x.reshape((B * T,) + x.shape[2:])], [None], [],
                                                 training)
        y = outs[0]
        return [y.reshape((B, T) + y.shape[1:])], [masks[0]]

    def _node_backward(self, buffers, douts, inputs, masks, states):
        x, dy = inputs[0], douts[0]
        if dy is None:
            return [None], []
        B, T = x.shape[:2]
        dins, _ = self.layer._node_backward(buffers, [dy.reshape((B * T,) + dy.shape[2:])],
                                            [x.reshape((B * T,) + x.shape[2:])], [None], [])
        dx = dins[0]
        return [None if dx is None else dx.reshape(x.shape)], []
