"""SimpleRNN, LSTM and GRU: Keras's arguments, defaults, weights and gate orders.

Each layer holds config and weights; ``forward`` hands its workspace buffers to
the kernel that ``kernels.get_kernel`` picks (Numba or Cython). Weights are
kept in Keras layout and ``get_weights()`` order:

=========  ==========================  ===========================  ==========================
layer      kernel                      recurrent_kernel             bias
=========  ==========================  ===========================  ==========================
SimpleRNN  (input_dim, units)          (units, units)               (units,)
LSTM       (input_dim, 4*units) ifco   (units, 4*units) ifco        (4*units,)
GRU        (input_dim, 3*units) zrh    (units, 3*units) zrh         (2, 3*units) if reset_after
                                                                    else (3*units,)
=========  ==========================  ===========================  ==========================

Inference only in this module's forward: ``dropout`` and ``recurrent_dropout``
are identity outside training (as in Keras), ``unroll`` changes nothing here.
"""
import numpy as np

from .. import _validation, kernels
from . import activations, initializers
from .base import Layer

_RNN_KWARGS_IGNORED_AT_INFERENCE = ("kernel_regularizer", "recurrent_regularizer", "bias_regularizer",
                                    "activity_regularizer", "kernel_constraint",
                                    "recurrent_constraint", "bias_constraint")


class _RNN(Layer):
    """Shared config, state handling and the one sequence driver."""

    _cell = None
    _gates = 1
    _takes_sequences = True

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", kernel_regularizer=None, recurrent_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, seed=None, return_sequences=False, return_state=False,
                 go_backwards=False, stateful=False, unroll=False, use_cudnn="auto",
                 zero_output_for_mask=False, **kwargs):
        super().__init__(**kwargs)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        cls = type(self).__name__
        self.units = _validation.positive_int(units, "units", cls)
        self.activation = activations.get(activation)
        self.recurrent_activation = activations.get(recurrent_activation)
        for arg, act in (("activation", self.activation), ("recurrent_activation", self.recurrent_activation)):
            if not activations.is_elementwise(act):
                raise ValueError(
                    f"{cls} \"{self.name}\": {arg}={act!r} is not supported inside a recurrent cell "
                    "(only elementwise activations are)."
                )
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = kernel_regularizer
        self.recurrent_regularizer = recurrent_regularizer
        self.bias_regularizer = bias_regularizer
        self.activity_regularizer = activity_regularizer
        self.kernel_constraint = kernel_constraint
        self.recurrent_constraint = recurrent_constraint
        self.bias_constraint = bias_constraint
        self.dropout = _validation.rate(dropout, "dropout", cls)
        self.recurrent_dropout = _validation.rate(recurrent_dropout, "recurrent_dropout", cls)
        self.seed = seed
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.unroll = bool(unroll)
        self.use_cudnn = use_cudnn
        self._states = None  # stateful layers: the carried state, [h] or [h, c]

    # -- building -----------------------------------------------------------------
    @property
    def state_size(self):
        return [self.units]

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(
                f"Input 0 of layer \"{self.name}\" is incompatible with the layer: expected "
                f"ndim=3, found ndim={len(input_shape) + 1}. Full shape received: "
                f"{_validation.format_shape((None,) + tuple(input_shape))}"
            )
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(f"Layer \"{self.name}\" needs a known feature size (last axis) to build.")
        KH = self._gates * self.units
        self._weight_specs, self._values = [], []
        self._add_weight("kernel", (input_dim, KH), self.kernel_initializer)
        self._add_weight("recurrent_kernel", (self.units, KH), self.recurrent_initializer)
        if self.use_bias:
            self._add_weight("bias", self._bias_shape(), self._bias_init)
        self._finish_build(input_shape)

    def _bias_shape(self):
        return (self._gates * self.units,)

    def _bias_init(self, shape, dtype):
        return self.bias_initializer(shape, dtype)

    def compute_output_shape(self, input_shape):
        T = input_shape[0]
        return (T, self.units) if self.return_sequences else (self.units,)

    def _pack(self):
        kernel, recurrent_kernel = self._values[0], self._values[1]
        bias = self._values[2] if self.use_bias else np.zeros(self._bias_shape(), self.dtype)
        self._packed = (kernel, recurrent_kernel, bias)

    # -- state --------------------------------------------------------------------------
    def reset_states(self):
        """Zero the carried state of a stateful layer (Keras's ``reset_states``)."""
        if self._states is not None:
            for s in self._states:
                s.fill(0)

    reset_state = reset_states

    @property
    def states(self):
        return None if self._states is None else [s.copy() for s in self._states]

    def _load_states(self, state_bufs, initial_state):
        B = state_bufs[0].shape[0]
        if initial_state is not None:
            if len(initial_state) != len(state_bufs):
                raise ValueError(
                    f"Layer \"{self.name}\" expects {len(state_bufs)} initial state tensors, "
                    f"got {len(initial_state)}."
                )
            for buf, s in zip(state_bufs, initial_state):
                s = np.asarray(s)
                if s.shape != buf.shape:
                    raise ValueError(
                        f"Layer \"{self.name}\": initial state has shape {s.shape}; expected "
                        f"{buf.shape} (batch, units)."
                    )
                np.copyto(buf, s, casting="unsafe")
        elif self.stateful:
            if self._states is None:
                self._states = [np.zeros_like(buf) for buf in state_bufs]
            elif self._states[0].shape[0] != B:
                raise ValueError(
                    f"Layer \"{self.name}\" is stateful with batch size {self._states[0].shape[0]}, "
                    f"but received a batch of {B}. Call reset_states() after changing it, or "
                    "predict with the same batch_size."
                )
            for buf, s in zip(state_bufs, self._states):
                np.copyto(buf, s)
        else:
            for buf in state_bufs:
                buf.fill(0)

    # -- running ----------------------------------------------------------------------
    def buffer_spec(self, B, input_shape, input_dtype):
        T, H = input_shape[0], self.units
        spec = {
            "y": ((B, T if self.return_sequences else 1, H), self.dtype),
            "xproj": ((B, T, self._gates * H), self.dtype),
            "rec": ((B, self._gates * H), self.dtype),
        }
        for name in self._state_names:
            spec[name] = ((B, H), self.dtype)
            spec["prev_" + name] = ((B, H), self.dtype)
        # One-step buffers for masked sequences (small: no T axis).
        spec.update({"step_x": ((B, 1, input_shape[1]), self.dtype),
                     "step_y": ((B, 1, H), self.dtype),
                     "step_xproj": ((B, 1, self._gates * H), self.dtype),
                     "prev_out": ((B, H), self.dtype), "keep": ((B, 1), np.bool_)})
        spec.update(self._extra_buffers(B))
        spec.update(self._cast_spec(B, input_shape, input_dtype))
        return spec

    _state_names = ("h",)

    def _extra_buffers(self, B):
        return {}

    def _node_output_shapes(self, input_shapes):
        out = tuple(self.compute_output_shape(input_shapes[0]))
        return [out] + [(self.units,)] * (len(self._state_names) if self.return_state else 0)

    def _node_forward(self, buffers, inputs, masks, states, training=False):
        mask = masks[0]
        y = self.forward(buffers, inputs[0], training=training, initial_state=states or None, mask=mask)
        outs = [y] + ([buffers[n] for n in self._state_names] if self.return_state else [])
        out_mask = mask if self.return_sequences else None
        return outs, [out_mask] + [None] * (len(outs) - 1)

    def forward(self, buffers, x, training=False, initial_state=None, mask=None):
        x = self._cast_input(buffers, x)
        B, T, C = x.shape
        state_bufs = [buffers[n] for n in self._state_names]
        self._load_states(state_bufs, initial_state)
        kernel_fn = kernels.get_kernel(self._cell, "forward", None, B)
        if mask is None:
            self._run_kernel(kernel_fn, buffers, buffers, x, B, T, C, self.return_sequences)
        else:
            self._forward_masked(kernel_fn, buffers, x, mask, state_bufs)
        if self.stateful and self._states is not None and not initial_state:
            for s, buf in zip(self._states, state_bufs):
                np.copyto(s, buf)
        y = buffers["y"]
        return y if self.return_sequences else y.reshape(B, self.units)

    def _forward_masked(self, kernel_fn, buffers, x, mask, state_bufs):
        """Keras's masked recurrence: at a masked step the state is carried
        unchanged and the output repeats the previous one (zeros before the first
        valid step, or always zeros with ``zero_output_for_mask``).

        Runs the kernel one step at a time (T=1) on step buffers, then blends.
        """
        B, T, C = x.shape
        if mask.shape != (B, T):
            raise ValueError(f"Layer \"{self.name}\": mask has shape {mask.shape}, expected {(B, T)}.")
        step = {k[5:]: v for k, v in buffers.items() if k.startswith("step_")}
        prev = [buffers[f"prev_{n}"] for n in self._state_names]
        y, y_step, out = buffers["y"], step["y"], buffers["prev_out"]
        keep = buffers["keep"]
        out.fill(0)
        for s in range(T):
            t = T - 1 - s if self.go_backwards else s
            np.copyto(step["x"], x[:, t:t + 1])
            for p, h in zip(prev, state_bufs):
                np.copyto(p, h)
            self._run_kernel(kernel_fn, step, buffers, step["x"], B, 1, C, True)
            np.logical_not(mask[:, t:t + 1], out=keep)
            for p, h in zip(prev, state_bufs):
                np.copyto(h, p, where=keep)  # masked rows keep the previous state
            if self.zero_output_for_mask:
                np.copyto(out, y_step[:, 0])
                np.copyto(out, 0, where=keep)
            else:
                np.copyto(out, y_step[:, 0], where=~keep)
            if self.return_sequences:
                np.copyto(y[:, s], out)
        if not self.return_sequences:
            np.copyto(y[:, 0], out)

    # -- config -------------------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units, activation=self.activation, use_bias=self.use_bias,
            dropout=self.dropout, recurrent_dropout=self.recurrent_dropout, seed=self.seed,
            return_sequences=self.return_sequences, return_state=self.return_state,
            go_backwards=self.go_backwards, stateful=self.stateful, unroll=self.unroll,
            kernel_initializer=self.kernel_initializer, recurrent_initializer=self.recurrent_initializer,
            bias_initializer=self.bias_initializer, zero_output_for_mask=self.zero_output_for_mask,
        )
        return config


class SimpleRNN(_RNN):
    """Fully connected RNN: ``h = activation(x @ kernel + h_tm1 @ recurrent_kernel + bias)``.

    Arguments are Keras's (``keras.layers.SimpleRNN``): units, activation="tanh",
    use_bias=True, kernel_initializer="glorot_uniform",
    recurrent_initializer="orthogonal", bias_initializer="zeros", dropout,
    recurrent_dropout, return_sequences, return_state, go_backwards, stateful,
    unroll, seed, plus regularizers and constraints (kept for training).
    """

    _cell = "simple_rnn"
    _gates = 1

    def __init__(self, units, activation="tanh", **kwargs):
        if "recurrent_activation" in kwargs:
            raise TypeError("Unrecognized keyword arguments passed to SimpleRNN: {'recurrent_activation': ...}")
        super().__init__(units, activation=activation, **kwargs)

    def _run_kernel(self, kernel_fn, seq, buffers, x, B, T, C, return_sequences):
        # seq holds the sequence-shaped buffers (y, xproj), buffers the per-row ones.
        kernel, recurrent_kernel, bias = self._packed
        kernel_fn(seq["y"], buffers["h"], seq["xproj"], buffers["rec"], x, kernel,
                  recurrent_kernel, bias, B, T, C, self.units, activations.code(self.activation),
                  int(self.go_backwards and T > 1), int(return_sequences))


class LSTM(_RNN):
    """Long Short-Term Memory layer (Hochreiter 1997), Keras's ``keras.layers.LSTM``.

    Gates in Keras's order i, f, c, o. ``unit_forget_bias=True`` (the default)
    initialises the forget gate's bias to ones.
    """

    _cell = "lstm"
    _gates = 4
    _state_names = ("h", "c")

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid",
                 unit_forget_bias=True, **kwargs):
        self.unit_forget_bias = bool(unit_forget_bias)
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation, **kwargs)

    @property
    def state_size(self):
        return [self.units, self.units]

    def _bias_init(self, shape, dtype):
        if not self.unit_forget_bias:
            return self.bias_initializer(shape, dtype)
        H = self.units
        return np.concatenate([
            self.bias_initializer((H,), dtype), np.ones((H,), dtype), self.bias_initializer((2 * H,), dtype)
        ])

    def _run_kernel(self, kernel_fn, seq, buffers, x, B, T, C, return_sequences):
        kernel, recurrent_kernel, bias = self._packed
        kernel_fn(seq["y"], buffers["h"], buffers["c"], seq["xproj"], buffers["rec"], x,
                  kernel, recurrent_kernel, bias, B, T, C, self.units,
                  activations.code(self.activation), activations.code(self.recurrent_activation),
                  int(self.go_backwards and T > 1), int(return_sequences))

    def get_config(self):
        config = super().get_config()
        config.update(recurrent_activation=self.recurrent_activation, unit_forget_bias=self.unit_forget_bias)
        return config


class GRU(_RNN):
    """Gated Recurrent Unit (Cho et al. 2014), Keras's ``keras.layers.GRU``.

    Gates in Keras's order z, r, h. ``reset_after=True`` (Keras 3's default)
    applies the reset gate after the recurrent product and keeps a separate
    recurrent bias: bias is (2, 3*units). ``reset_after=False`` applies it
    before; bias is (3*units,).
    """

    _cell = "gru"
    _gates = 3

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", reset_after=True,
                 **kwargs):
        self.reset_after = bool(reset_after)
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation, **kwargs)

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _pack(self):
        kernel, recurrent_kernel = self._values[0], self._values[1]
        H = self.units
        bias = self._values[2] if self.use_bias else np.zeros(self._bias_shape(), self.dtype)
        if self.reset_after:
            input_bias, recurrent_bias = np.ascontiguousarray(bias[0]), np.ascontiguousarray(bias[1])
        else:
            input_bias, recurrent_bias = bias, np.zeros(3 * H, self.dtype)
        recurrent_kernel_h = np.ascontiguousarray(recurrent_kernel[:, 2 * H:])
        self._packed = (kernel, recurrent_kernel, recurrent_kernel_h, input_bias, recurrent_bias)

    def _extra_buffers(self, B):
        return {"rec_h": ((B, self.units), self.dtype), "rh": ((B, self.units), self.dtype)}

    def _run_kernel(self, kernel_fn, seq, buffers, x, B, T, C, return_sequences):
        kernel, recurrent_kernel, recurrent_kernel_h, input_bias, recurrent_bias = self._packed
        kernel_fn(seq["y"], buffers["h"], seq["xproj"], buffers["rec"], buffers["rec_h"],
                  buffers["rh"], x, kernel, recurrent_kernel, recurrent_kernel_h, input_bias,
                  recurrent_bias, B, T, C, self.units, activations.code(self.activation),
                  activations.code(self.recurrent_activation), int(self.go_backwards and T > 1),
                  int(return_sequences), int(self.reset_after))

    def get_config(self):
        config = super().get_config()
        config.update(recurrent_activation=self.recurrent_activation, reset_after=self.reset_after)
        return config
