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

``dropout`` and ``recurrent_dropout`` are identity outside training (as in
Keras), ``unroll`` changes nothing here.

Training: ``_node_forward_train`` runs the ``forward_train`` kernel (the same
outputs as ``forward``, plus the saved buffers the ``backward`` kernel reads:
contract in ``kernels/__init__.py``) and ``_node_backward`` the ``backward``
kernel, weight gradients accumulated into ``self._grads``. ``dropout`` in
training is Keras 3's: one inverted-dropout mask of shape (batch, input_dim) per
sequence, applied to the input at every step (``DropoutRNNCell``).
``recurrent_dropout`` in training is Keras 3's too: LSTM and GRU then run as
Keras's ``implementation=1`` cells, one input mask and one ``h_tm1`` mask per
gate (SimpleRNN: one each), drawn once per sequence and applied inside the
``*_forward_train_rdrop`` / ``*_backward_rdrop`` kernels (``numba_rdrop.py``,
``src/_rdrop.pyx``);
so with ``recurrent_dropout`` the input dropout is per gate as well.
A masked sequence (Keras's mask, e.g. from ``Embedding(mask_zero=True)``)
trains in one call of each pass, as it predicts: ``forward_train`` and
``backward`` take the mask as ``keep`` with ``zero_output_for_mask``
(kernels/contract.py; masked rows carry their state, the backward routes the
gradients as Keras's masked recurrence does). Only with ``recurrent_dropout``
(whose ``*_rdrop`` kernels take no mask) does a masked sequence still train
through a Python loop over steps, one T=1 kernel call each
(``_forward_train_masked``, ``_backward_masked``). Both backends have every
training pass, recurrent dropout's included: they run on the backend
``kernels.get_kernel`` picks, as inference does.
"""
import warnings

import numpy as np

from .. import _validation, constraints, kernels, regularizers
from ..kernels import contract
from . import activations, initializers
from .base import Layer, serialize_option

def _training_kernel(cell, pass_, B):
    """The training kernel from the selected backend (every pass, the
    recurrent-dropout ones included, exists in both)."""
    return kernels.get_kernel(cell, pass_, None, B)


class _RNN(Layer):
    """Shared config, state handling and the one sequence driver."""

    _cell = None
    _gates = 1
    _packed_names = ("kernel", "recurrent_kernel", "bias")  # _pack's tuple, by contract name
    _takes_sequences = True

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", kernel_regularizer=None, recurrent_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, seed=None, return_sequences=False, return_state=False,
                 go_backwards=False, stateful=False, unroll=False, use_cudnn="auto",
                 zero_output_for_mask=False, **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
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
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.recurrent_constraint = constraints.get(recurrent_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
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
    def reset_states(self, states=None):
        """Zero the carried state of a stateful layer (Keras's ``reset_states``);
        with ``states`` (Keras 2's ``reset_states(states)``), set it to them: one
        (batch, units) array per state (``[h]``, or ``[h, c]`` for an LSTM; a
        single array where there is one state). Every array is checked and
        converted before any state changes."""
        if states is None:
            if self._states is not None:
                for s in self._states:
                    s.fill(0)
            return
        if not self.stateful:
            raise AttributeError(f'Layer "{self.name}" must be stateful to take states in reset_states.')
        n = len(self._state_names)
        values = [states] if isinstance(states, np.ndarray) and n == 1 else list(states)
        if len(values) != n:
            raise ValueError(f'Layer "{self.name}" expects {n} state arrays in reset_states, received {len(values)}.')
        if self._states is not None:
            shapes = [s.shape for s in self._states]
        else:  # no call yet: the states' batch size is theirs to give, the same for all
            first = np.shape(values[0])
            shapes = [(first[0] if len(first) == 2 else None, self.units)] * n
        new = [_validation.state_array(v, shape, self.dtype, f'reset_states: layer "{self.name}", state {k}')
               for k, (v, shape) in enumerate(zip(values, shapes))]
        if self._states is None:
            self._states = new
        else:  # in place: a fused plan reads these very arrays
            for s, v in zip(self._states, new):
                np.copyto(s, v)

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
                _validation.cast_into(buf, s)
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
        spec["keep"] = ((B, T), np.uint8)  # a mask, as the kernels read it
        spec.update(self._extra_buffers(B))
        spec.update(self._cast_spec(B, input_shape, input_dtype))
        return spec

    _state_names = ("h",)

    def _extra_buffers(self, B):
        return {}

    def _forward_args(self, buffers, x, keep):
        """The forward kernel's arguments (kernels/contract.py) on ``buffers``:
        states and scratch by their contract names, the weights from
        ``_call_packed``, ``keep`` a mask from ``_keep`` (or contract.NO_MASK)."""
        B, T, C = x.shape
        call = (self._cell, "forward")
        named = {name: buffers[name] for name, role, _ in contract.CALLS[call] if role in ("inout", "scratch")}
        named.update(zip(self._packed_names, self._call_packed()))
        named.update(y_out=buffers["y"], x=x, keep=keep, B=B, T=T, C=C, H=self.units,
                     activation=activations.code(self.activation), go_backwards=int(self.go_backwards and T > 1),
                     return_sequences=int(self.return_sequences),
                     zero_output_for_mask=int(self.zero_output_for_mask))
        if "recurrent_activation" in contract.NAMES[call]:
            named["recurrent_activation"] = activations.code(self.recurrent_activation)
        if "reset_after" in contract.NAMES[call]:
            named["reset_after"] = int(self.reset_after)
        return contract.bind(*call, **named)

    def _keep(self, buffers, mask, B, T):
        """``mask`` (Keras's, (B, T), true = a real step) as the kernels' uint8 ``keep``."""
        if mask is None:
            return contract.NO_MASK
        if mask.shape != (B, T):
            raise ValueError(f"Layer \"{self.name}\": mask has shape {mask.shape}, expected {(B, T)}.")
        keep = buffers["keep"]
        np.not_equal(mask, 0, out=keep.view(np.bool_))
        return keep

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
        kernel_fn(*self._forward_args(buffers, x, self._keep(buffers, mask, B, T)))
        if self.stateful and self._states is not None and not initial_state:
            for s, buf in zip(self._states, state_bufs):
                np.copyto(s, buf)
        y = buffers["y"]
        return y if self.return_sequences else y.reshape(B, self.units)

    def _blend_masked_step(self, mask_t, keep, prev, state_bufs, y_step, out):
        """After one step of a masked sequence: masked rows get their previous
        state back; ``out`` takes the step's output where valid, and keeps the
        previous output (or zeros, with ``zero_output_for_mask``) where masked.
        (Recurrent dropout with a mask only: the *_rdrop kernels take no mask.)"""
        np.logical_not(mask_t, out=keep)
        for p, h in zip(prev, state_bufs):
            np.copyto(h, p, where=keep)
        if self.zero_output_for_mask:
            np.copyto(out, y_step[:, 0])
            np.copyto(out, 0, where=keep)
        else:
            np.copyto(out, y_step[:, 0], where=~keep)

    # -- training ------------------------------------------------------------------------
    # Saved by forward_train, read by backward: (B, T, ...) buffers, which the
    # masked recurrent-dropout loop views as (T, B, 1, ...), one contiguous
    # slice per step.
    _seq_saved = ("h_tm1_seq", "preact", "gates")
    _seq_scratch = ("dgates",)

    def _node_train_spec(self, B, input_shapes, input_dtypes):
        T, C = input_shapes[0]
        H, G, dt = self.units, self._gates * self.units, self.dtype
        Ty = T if self.return_sequences else 1
        spec = {
            "y": ((B, Ty, H), dt), "rec": ((B, G), dt),
            "h_tm1_seq": ((B, T, H), dt), "preact": ((B, T, G), dt), "gates": ((B, T, G), dt),
            "dgates": ((B, T, G), dt), "dgates_t": ((B, G), dt), "dw": ((max(C, H) * G,), dt),
            "dx0": ((B, T, C), dt), "dy0": ((B, Ty, H), dt), "dyc": ((B, Ty, H), dt),
            "db": ((G,), dt),
            # the mask, as the kernels read it, and the masked backward's scratch
            "keep": ((B, T), np.uint8), "dh_rec": ((B, H), dt), "dcarry": ((B, H), dt),
        }
        for n in self._state_names:
            for name in (n, f"d{n}0", f"d{n}_n0", f"d{n}_nc"):
                spec[name] = ((B, H), dt)
        if self.dropout > 0:
            spec.update({"x_drop": ((B, T, C), dt), "dp_noise": ((B, C), dt), "dp_keep": ((B, C), np.bool_)})
        if self.recurrent_dropout > 0:
            K = self._gates  # Keras 3: one input and one recurrent mask per gate
            spec.update({"rd_dp": ((K, B, C), dt), "rd_rdp": ((K, B, H), dt), "rd_keep_x": ((K, B, C), np.bool_),
                         "rd_keep_h": ((K, B, H), np.bool_), "rd_kernel_g": ((K, C, H), dt),
                         "rd_rkernel_g": ((K, H, H), dt), "rd_xm": ((B * T, C), dt), "rd_pm": ((B * T, H), dt),
                         "rd_hseq": ((B * T, H), dt), "rd_hm": ((B, H), dt), "rd_recg": ((B, H), dt)})
            # a masked sequence with recurrent dropout: the per-step loop's
            # x, output blend and running gradients
            spec.update({"xs": ((T, B, 1, C), dt), "step_y": ((B, 1, H), dt), "prev_out": ((B, H), dt),
                         "step_keep": ((B, 1), np.bool_), "step_drop": ((B, 1), np.bool_),
                         "dout_carry": ((B, H), dt), "dy_step": ((B, 1, H), dt), "dx_step": ((B, 1, C), dt)})
            for n in self._state_names:
                for name in ("prev_" + n, f"d{n}_run", f"d{n}n_step", f"d{n}0_step"):
                    spec[name] = ((B, H), dt)
        spec.update(self._extra_train_buffers(B, T))
        spec.update(self._cast_spec(B, input_shapes[0], input_dtypes[0]))
        return spec

    def _extra_train_buffers(self, B, T):
        return {}

    def _dropout_active(self, training):
        return training and 0.0 < self.dropout < 1.0

    def _rdrop_active(self, training):
        return training and 0.0 < self.recurrent_dropout < 1.0

    def _draw_rdrop_masks(self, buffers, C):
        """Keras 3's masks with ``recurrent_dropout`` (``DropoutRNNCell``, cells with
        ``implementation=1``): per gate, one inverted-dropout mask on the input
        (all ones without ``dropout``) and one on ``h_tm1``, drawn once per
        sequence, input masks first. Also packs the per-gate weight blocks the
        ``*_rdrop`` kernels read."""
        from ..training import random as _random

        gen = _random.layer_generator(self)
        for name, keep_name, rate in (("rd_dp", "rd_keep_x", self.dropout if self._dropout_active(True) else 0.0),
                                      ("rd_rdp", "rd_keep_h", self.recurrent_dropout)):
            noise, keep = buffers[name], buffers[keep_name]
            if rate <= 0.0:
                noise.fill(1)
                continue
            gen.random(dtype=noise.dtype, out=noise)
            np.greater_equal(noise, rate, out=keep)
            np.multiply(keep, noise.dtype.type(1.0 / (1.0 - rate)), out=noise, casting="unsafe")
        K, H = self._gates, self.units
        kernel, recurrent_kernel = self._packed[0], self._packed[1]
        np.copyto(buffers["rd_kernel_g"], kernel.reshape(C, K, H).transpose(1, 0, 2))
        np.copyto(buffers["rd_rkernel_g"], recurrent_kernel.reshape(H, K, H).transpose(1, 0, 2))

    def _rdrop_args(self, buffers, B, T):
        """The ``*_rdrop`` kernels' extra arguments after the weights: (dp, rdp, xm, pm, hm, recg)."""
        return (buffers["rd_dp"], buffers["rd_rdp"], buffers["rd_xm"][:B * T], buffers["rd_pm"][:B * T],
                buffers["rd_hm"], buffers["rd_recg"])

    # The plain training kernels take the mask (keep, zero_output_for_mask, and
    # the backward's dh_rec and dcarry scratch; GRU's dh_rec is its own); the
    # *_rdrop kernels do not (kernels/contract.py).
    @staticmethod
    def _keep_arg(rdrop, keep):
        return () if rdrop else (keep,)

    def _mask_flag(self, rdrop):
        return () if rdrop else (int(self.zero_output_for_mask),)

    @staticmethod
    def _mask_scratch(buffers, rdrop):
        return () if rdrop else (buffers["dh_rec"], buffers["dcarry"])

    def _node_forward_train(self, buffers, inputs, masks, states, training=True):
        x = self._cast_input(buffers, inputs[0])
        rdrop = self._rdrop_active(training)
        if rdrop:
            # Keras 3: per-gate masks on x and h_tm1, applied inside the *_rdrop kernels.
            self._draw_rdrop_masks(buffers, x.shape[2])
        elif self._dropout_active(training):
            # Keras 3: one mask per sequence, (batch, input_dim), at every step.
            from ..training import random as _random

            noise, keep, x_drop = buffers["dp_noise"], buffers["dp_keep"], buffers["x_drop"]
            _random.layer_generator(self).random(dtype=noise.dtype, out=noise)
            np.greater_equal(noise, self.dropout, out=keep)
            np.multiply(keep, noise.dtype.type(1.0 / (1.0 - self.dropout)), out=noise, casting="unsafe")
            np.multiply(x, noise[:, None, :], out=x_drop)
            x = x_drop
        B, T, C = x.shape
        state_bufs = [buffers[n] for n in self._state_names]
        self._load_states(state_bufs, states or None)
        kernel_fn = _training_kernel(self._cell, "forward_train_rdrop" if rdrop else "forward_train", B)
        mask = masks[0]
        if mask is not None and rdrop:  # the *_rdrop kernels take no mask
            self._forward_train_masked(kernel_fn, buffers, x, mask, state_bufs, rdrop)
        else:
            self._run_train_kernel(kernel_fn, buffers, buffers, x, B, T, C, self.return_sequences, rdrop,
                                   self._keep(buffers, mask, B, T))
        if self.stateful and self._states is not None and not states:
            for s, buf in zip(self._states, state_bufs):
                np.copyto(s, buf)
        y = buffers["y"]
        y = y if self.return_sequences else y.reshape(B, self.units)
        outs = [y] + ([buffers[n] for n in self._state_names] if self.return_state else [])
        out_mask = mask if self.return_sequences else None
        return outs, [out_mask] + [None] * (len(outs) - 1)

    def _step_views(self, buffers, T):
        """The saved and scratch sequence buffers viewed as (T, B, 1, ...): step s is ``[s]``."""
        views = {}
        for name in self._seq_saved + self._seq_scratch:
            a = buffers[name]
            views[name] = a.reshape((T, a.shape[0], 1) + a.shape[2:])
        return views

    def _forward_train_masked(self, kernel_fn, buffers, x, mask, state_bufs, rdrop=False):
        """Keras's masked recurrence with a recurrent-dropout training kernel
        (which takes no mask), one T=1 call a step, saving every step for the
        backward (the plain training kernels take the mask themselves:
        kernels/contract.py)."""
        B, T, C = x.shape
        if mask.shape != (B, T):
            raise ValueError(f"Layer \"{self.name}\": mask has shape {mask.shape}, expected {(B, T)}.")
        steps = self._step_views(buffers, T)
        xs = buffers["xs"]
        prev = [buffers[f"prev_{n}"] for n in self._state_names]
        y, y_step, out, keep = buffers["y"], buffers["step_y"], buffers["prev_out"], buffers["step_keep"]
        out.fill(0)
        for s in range(T):
            t = T - 1 - s if self.go_backwards else s
            np.copyto(xs[s], x[:, t:t + 1])
            for p, h in zip(prev, state_bufs):
                np.copyto(p, h)
            seq = {name: v[s] for name, v in steps.items()}
            seq["y"] = y_step
            self._run_train_kernel(kernel_fn, seq, buffers, xs[s], B, 1, C, True, rdrop, contract.NO_MASK)
            self._blend_masked_step(mask[:, t:t + 1], keep, prev, state_bufs, y_step, out)
            if self.return_sequences:
                np.copyto(y[:, s], out)
        if not self.return_sequences:
            np.copyto(y[:, 0], out)

    def _node_backward(self, buffers, douts, inputs, masks, states):
        B, T, C = inputs[0].shape
        H, rs = self.units, self.return_sequences
        Ty = T if rs else 1
        dy = douts[0]
        dy = buffers["dy0"] if dy is None else self._contiguous(buffers, "dyc", dy.reshape(B, Ty, H))
        n_states = len(self._state_names)
        state_douts = list(douts[1:1 + n_states]) if self.return_state else []
        state_douts += [None] * (n_states - len(state_douts))
        d_n = [buffers[f"d{n}_n0"] if d is None else self._contiguous(buffers, f"d{n}_nc", d)
               for n, d in zip(self._state_names, state_douts)]
        # Backward follows only a training pass, so dropout was active iff 0 < dropout < 1
        # (with recurrent dropout, the *_rdrop kernels apply both masks themselves).
        rdrop = self._rdrop_active(True)
        trained_with_dropout = self._dropout_active(True) and not rdrop
        if trained_with_dropout:
            x = buffers["x_drop"]
        else:
            x = buffers["x_cast"] if "x_cast" in buffers else inputs[0]
        kernel_fn = _training_kernel(self._cell, "backward_rdrop" if rdrop else "backward", B)
        dx = buffers["dx0"]
        d0 = [buffers[f"d{n}0"] for n in self._state_names]
        if masks[0] is not None and rdrop:  # the *_rdrop kernels take no mask
            self._backward_masked(kernel_fn, buffers, masks[0], dy, d_n, d0, rdrop)
        else:
            self._run_backward_kernel(kernel_fn, buffers, buffers, x, dy, d_n, dx, d0, B, T, C, rs, rdrop,
                                      self._keep(buffers, masks[0], B, T))
        if trained_with_dropout:
            # forward: x_drop = x * noise
            np.multiply(dx, buffers["dp_noise"][:, None, :], out=dx)
        return [dx], (d0 if states else [])

    def _backward_masked(self, kernel_fn, buffers, mask, dy, d_n, d0, rdrop=False):
        """Undo ``_forward_train_masked`` step by step, from the last to the first
        (recurrent dropout with a mask only).

        forward, per step s (input time t): ``y_s = keep ? y_step : carried``
        (``carried`` is 0 with ``zero_output_for_mask``, else y_{s-1}) and
        ``state_s = keep ? state_step : state_{s-1}``.
        """
        dx = buffers["dx0"]
        B, T, C = dx.shape
        steps = self._step_views(buffers, T)
        xs = buffers["xs"]
        runs = [buffers[f"d{n}_run"] for n in self._state_names]
        step_n = [buffers[f"d{n}n_step"] for n in self._state_names]
        step_0 = [buffers[f"d{n}0_step"] for n in self._state_names]
        for r, d in zip(runs, d_n):
            np.copyto(r, d)
        carry, dy_step, dx_step = buffers["dout_carry"], buffers["dy_step"], buffers["dx_step"]
        keep, drop = buffers["step_keep"], buffers["step_drop"]
        dout = dy_step[:, 0]
        if self.return_sequences:
            carry.fill(0)
        else:
            np.copyto(carry, dy[:, 0])  # the output is the last blended y
        for s in range(T - 1, -1, -1):
            t = T - 1 - s if self.go_backwards else s
            np.copyto(keep, mask[:, t:t + 1])
            np.logical_not(keep, out=drop)
            if self.return_sequences:
                np.add(carry, dy[:, s], out=dout)
            else:
                np.copyto(dout, carry)
            # forward: y_s = keep ? y_step : carried
            if self.zero_output_for_mask:
                carry.fill(0)
            else:
                np.multiply(dout, drop, out=carry)
            np.multiply(dout, keep, out=dout)
            # forward: state_s = keep ? state_step : state_{s-1}
            for r, n in zip(runs, step_n):
                np.multiply(r, keep, out=n)
            seq = {name: v[s] for name, v in steps.items()}
            self._run_backward_kernel(kernel_fn, seq, buffers, xs[s], dy_step, step_n, dx_step, step_0,
                                      B, 1, C, True, rdrop, contract.NO_MASK)
            for r, o in zip(runs, step_0):
                np.copyto(r, o, where=keep)
            np.copyto(dx[:, t], dx_step[:, 0])
        for o, r in zip(d0, runs):
            np.copyto(o, r)

    def _bias_grad(self, buffers):
        return self._grads[2] if self.use_bias else buffers["db"]

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
        for attr in ("kernel_regularizer", "recurrent_regularizer", "bias_regularizer", "activity_regularizer"):
            config[attr] = serialize_option(getattr(self, attr), regularizers)
        for attr in ("kernel_constraint", "recurrent_constraint", "bias_constraint"):
            config[attr] = serialize_option(getattr(self, attr), constraints)
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
        if kwargs.pop("activity_regularizer", None) is not None:
            # Keras 3.15's SimpleRNN takes the argument but never passes it to its base
            # Layer: no penalty, and get_config says None. rnnengine follows the oracle.
            warnings.warn("SimpleRNN: activity_regularizer is ignored, as Keras 3's SimpleRNN ignores it (its "
                          "penalty never reaches the loss); LSTM and GRU apply theirs.", UserWarning, stacklevel=2)
        super().__init__(units, activation=activation, **kwargs)

    def _run_train_kernel(self, kernel_fn, seq, buffers, x, B, T, C, return_sequences, rdrop, keep):
        kernel, recurrent_kernel, bias = self._packed
        if rdrop:
            kernel, recurrent_kernel = buffers["rd_kernel_g"], buffers["rd_rkernel_g"]
        kernel_fn(seq["y"], buffers["h"], seq["h_tm1_seq"], seq["preact"], seq["gates"], buffers["rec"], x,
                  *self._keep_arg(rdrop, keep), kernel, recurrent_kernel, bias,
                  *(self._rdrop_args(buffers, B, T) if rdrop else ()),
                  B, T, C, self.units, activations.code(self.activation),
                  int(self.go_backwards and T > 1), int(return_sequences), *self._mask_flag(rdrop))

    def _run_backward_kernel(self, kernel_fn, seq, buffers, x, dy, d_n, dx, d0, B, T, C, return_sequences,
                             rdrop, keep):
        kernel, recurrent_kernel, _ = self._packed
        extra = ()
        if rdrop:
            kernel, recurrent_kernel = buffers["rd_kernel_g"], buffers["rd_rkernel_g"]
            extra = self._rdrop_args(buffers, B, T) + (buffers["rd_hseq"][:B * T],)
        kernel_fn(dx, d0[0], self._grads[0], self._grads[1], self._bias_grad(buffers), seq["dgates"],
                  buffers["dgates_t"], *self._mask_scratch(buffers, rdrop), buffers["dw"], dy, d_n[0],
                  seq["h_tm1_seq"], seq["preact"], seq["gates"], x, *self._keep_arg(rdrop, keep), kernel,
                  recurrent_kernel, *extra, B, T, C, self.units, activations.code(self.activation),
                  int(self.go_backwards and T > 1), int(return_sequences), *self._mask_flag(rdrop))


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

    _seq_saved = _RNN._seq_saved + ("c_tm1_seq",)

    def _extra_train_buffers(self, B, T):
        return {"c_tm1_seq": ((B, T, self.units), self.dtype)}

    def _run_train_kernel(self, kernel_fn, seq, buffers, x, B, T, C, return_sequences, rdrop, keep):
        kernel, recurrent_kernel, bias = self._packed
        if rdrop:
            kernel, recurrent_kernel = buffers["rd_kernel_g"], buffers["rd_rkernel_g"]
        kernel_fn(seq["y"], buffers["h"], buffers["c"], seq["h_tm1_seq"], seq["c_tm1_seq"], seq["preact"],
                  seq["gates"], buffers["rec"], x, *self._keep_arg(rdrop, keep), kernel, recurrent_kernel, bias,
                  *(self._rdrop_args(buffers, B, T) if rdrop else ()), B, T, C, self.units,
                  activations.code(self.activation), activations.code(self.recurrent_activation),
                  int(self.go_backwards and T > 1), int(return_sequences), *self._mask_flag(rdrop))

    def _run_backward_kernel(self, kernel_fn, seq, buffers, x, dy, d_n, dx, d0, B, T, C, return_sequences,
                             rdrop, keep):
        kernel, recurrent_kernel, _ = self._packed
        extra = ()
        if rdrop:
            kernel, recurrent_kernel = buffers["rd_kernel_g"], buffers["rd_rkernel_g"]
            extra = self._rdrop_args(buffers, B, T) + (buffers["rd_hseq"][:B * T],)
        kernel_fn(dx, d0[0], d0[1], self._grads[0], self._grads[1], self._bias_grad(buffers), seq["dgates"],
                  buffers["dgates_t"], *self._mask_scratch(buffers, rdrop), buffers["dw"], dy, d_n[0], d_n[1],
                  seq["h_tm1_seq"], seq["c_tm1_seq"], seq["preact"], seq["gates"], x, *self._keep_arg(rdrop, keep),
                  kernel, recurrent_kernel, *extra, B, T, C, self.units,
                  activations.code(self.activation), activations.code(self.recurrent_activation),
                  int(self.go_backwards and T > 1), int(return_sequences), *self._mask_flag(rdrop))

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
    _packed_names = ("kernel", "recurrent_kernel", "recurrent_kernel_h", "input_bias", "recurrent_bias")

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

    _seq_saved = _RNN._seq_saved + ("hh_rec_seq",)
    _seq_scratch = _RNN._seq_scratch + ("dhh_rec_seq",)

    def _extra_train_buffers(self, B, T):
        H, dt = self.units, self.dtype
        return {"rec_h": ((B, H), dt), "rh": ((B, H), dt), "hh_rec_seq": ((B, T, H), dt),
                "dhh_rec_seq": ((B, T, H), dt), "dh_rec": ((B, H), dt), "dhh_t": ((B, H), dt),
                "dib": ((3 * H,), dt), "drb": ((3 * H,), dt)}

    def _run_train_kernel(self, kernel_fn, seq, buffers, x, B, T, C, return_sequences, rdrop, keep):
        kernel, recurrent_kernel, recurrent_kernel_h, input_bias, recurrent_bias = self._packed
        if rdrop:
            kernel_fn(seq["y"], buffers["h"], seq["h_tm1_seq"], seq["preact"], seq["gates"], seq["hh_rec_seq"],
                      buffers["rec"], buffers["rec_h"], buffers["rh"], x, buffers["rd_kernel_g"],
                      buffers["rd_rkernel_g"], input_bias, recurrent_bias, *self._rdrop_args(buffers, B, T),
                      B, T, C, self.units, activations.code(self.activation),
                      activations.code(self.recurrent_activation), int(self.go_backwards and T > 1),
                      int(return_sequences), int(self.reset_after))
            return
        kernel_fn(seq["y"], buffers["h"], seq["h_tm1_seq"], seq["preact"], seq["gates"], seq["hh_rec_seq"],
                  buffers["rec"], buffers["rec_h"], buffers["rh"], x, keep, kernel, recurrent_kernel,
                  recurrent_kernel_h, input_bias, recurrent_bias, B, T, C, self.units,
                  activations.code(self.activation), activations.code(self.recurrent_activation),
                  int(self.go_backwards and T > 1), int(return_sequences), int(self.reset_after),
                  int(self.zero_output_for_mask))

    def _run_backward_kernel(self, kernel_fn, seq, buffers, x, dy, d_n, dx, d0, B, T, C, return_sequences,
                             rdrop, keep):
        kernel, recurrent_kernel, recurrent_kernel_h, _, _ = self._packed
        if not self.use_bias:
            dinput_bias, drecurrent_bias = buffers["dib"], buffers["drb"]
        elif self.reset_after:  # Keras's bias is (2, 3H): [input_bias, recurrent_bias]
            dinput_bias, drecurrent_bias = self._grads[2][0], self._grads[2][1]
        else:
            dinput_bias, drecurrent_bias = self._grads[2], buffers["drb"]
        if rdrop:
            weights = (buffers["rd_kernel_g"], buffers["rd_rkernel_g"]) + self._rdrop_args(buffers, B, T) + \
                (buffers["rd_hseq"][:B * T],)
        else:
            weights = (kernel, recurrent_kernel, recurrent_kernel_h)
        kernel_fn(dx, d0[0], self._grads[0], self._grads[1], dinput_bias, drecurrent_bias, seq["dgates"],
                  seq["dhh_rec_seq"], buffers["dgates_t"], buffers["dh_rec"], buffers["dhh_t"],
                  *(() if rdrop else (buffers["dcarry"],)), buffers["dw"],
                  dy, d_n[0], seq["h_tm1_seq"], seq["preact"], seq["gates"], seq["hh_rec_seq"], x,
                  *self._keep_arg(rdrop, keep), *weights, B, T, C, self.units,
                  activations.code(self.activation), activations.code(self.recurrent_activation),
                  int(self.go_backwards and T > 1), int(return_sequences), int(self.reset_after),
                  *self._mask_flag(rdrop))

    def _after_update(self):
        if not self.reset_after:  # the packed contiguous copy of recurrent_kernel[:, 2H:]
            np.copyto(self._packed[2], self._values[1][:, 2 * self.units:])

    def get_config(self):
        config = super().get_config()
        config.update(recurrent_activation=self.recurrent_activation, reset_after=self.reset_after)
        return config
