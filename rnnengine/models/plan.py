"""Call plans: a model's kernel calls with every argument bound once.

For an inference model of Embedding (on an input), Masking, SimpleRNN, LSTM,
GRU (stateful too: its carried state arrays are bound in place and not
zeroed), Bidirectional (merged), Dense, TimeDistributed(Dense), RepeatVector
(its n steps run whatever the input's T), Flatten, Activation and Dropout
layers, Sequential or functional (up to 8 inputs and outputs; merge layers; a
recurrent layer's ``initial_state`` from model inputs or another layer's
returned state; returned states as outputs: seq2seq encoders and decoder
steps), everything a call passes to the kernels is fixed per (batch, input
shapes, dtype): the workspace buffers, the weights, the dims, the activation
codes, and where a mask is written and read (an Embedding's mask_zero or a
Masking layer writes a (B, T) keep array that the recurrent steps downstream
read, as Keras propagates masks). A ``Plan`` binds those argument tuples
once; a call then copies its inputs into the plan's input buffers, zeroes the
states, runs
``fn(*args)`` for each kernel, and copies the output out. That cuts the Python
between ``predict`` and the kernels to a few attribute reads, which is what a
batch-1 call of a small model costs most (see bench/README.md).

When every kernel the plan binds is a Cython one, the plan also builds a
``CyPlan`` (src/_plan.pyx): the same calls as raw pointers, run by one C call
that checks the input and output arrays itself. ``predict`` and
``Stream.step`` then go straight to it (``BaseModel.predict`` keeps the
thread's last one), which takes the Python per call down to a method call.

A plan is stale when the weights (``layer._packed``) or the kernel backend
(``config.get_kernels()``) change; it is then rebuilt. Plans live per thread
(``threading.local``), so concurrent calls never share buffers. Models a plan
cannot describe fall back to the general path in ``base.py``. A CyPlan learns
of changes through the epoch (``kernels.bump_epoch``, called when any layer's
weights are replaced or the backend changes) and is re-checked here then.
"""
import os
import sys

import numpy as np

from .. import config, kernels
from ..kernels import contract
from ..layers import activations
from ..layers.core import Activation, Dense, Dropout, Embedding, Flatten, Masking, RepeatVector
from ..layers.merge import Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract
from ..layers.recurrent import _RNN
from ..layers.wrappers import Bidirectional, TimeDistributed


class Plan:
    """``x_shapes``: the model's input shapes (batch first; one shape or a
    list). ``states``: for a stream, {layer index: [h] or [h, c]}, the arrays
    that carry the state from call to call (bound in place of the
    workspace's, and not zeroed); ``cy_shapes``: the input and output shapes
    the CyPlan checks (a stream steps (B, features) into the (B, 1, features)
    buffers); ``t_generic``: the CyPlan runs every T up to ``x_shape[1]`` (the
    Python call list, the Numba backend's, runs exactly ``x_shapes``)."""

    def __init__(self, model, x_shapes, dtypes, states=None, cy_shapes=None, lock=None, t_generic=False):
        if not isinstance(x_shapes, list):
            x_shapes, dtypes = [x_shapes], [dtypes]
        B = x_shapes[0][0]
        self.ws = model._make_workspace((B,) + tuple((tuple(s[1:]), np.dtype(d).str)
                                                     for s, d in zip(x_shapes, dtypes)))
        self.xs = [np.zeros(s, d) for s, d in zip(x_shapes, dtypes)]
        self.x = self.xs[0]
        self.calls, self.zero, cy_steps, names = [], [], [], []
        inputs = [_Flow(x, flow_seq_T(x.shape, x.dtype), ("x", k), None) for k, x in enumerate(self.xs)]
        binder = _Binder(self.calls, self.zero if states is None else [], cy_steps, names, t_generic,
                         stream=states is not None)
        if hasattr(model, "_nodes"):  # a functional graph: its nodes in order, each on its inputs' flows
            flows = {id(t): f for t, f in zip(model.inputs, inputs)}
            for node, buffers in zip(model._nodes, self.ws.node_buffers):
                ins = [flows[id(t)] for t in node.inputs]
                if isinstance(node.layer, tuple(_MERGE_LAYERS)):
                    outs = [binder.merge(node.layer, buffers, ins)]
                else:
                    outs = binder.bind(node.layer, buffers, ins[0], first=ins[0].src[0] == "x",
                                       initial=[flows[id(t)] for t in node.states], all_outputs=True)
                for t, f in zip(node.outputs, outs):
                    flows[id(t)] = f
            outputs = [flows[id(t)] for t in model.outputs]
        else:
            flow = inputs[0]
            for i, (layer, buffers) in enumerate(zip(model.layers, self.ws.layer_buffers)):
                if states is not None and i in states:
                    if isinstance(layer, Bidirectional):
                        raise _NotPlannable
                    buffers = dict(buffers, **dict(zip(layer._state_names, states[i])))
                flow = binder.bind(layer, buffers, flow, first=i == 0)
            outputs = [flow]
        if any(f.src[0] == "x" for f in outputs):
            raise _NotPlannable  # an input returned as it came: nothing to plan
        self.stamp = _stamp(model)  # after binding: a stateful layer's first plan creates its states
        self.ys = [f.y for f in outputs]
        y = self.y = self.ys[0]
        buffers = getattr(self.ws, "node_buffers", None) or self.ws.layer_buffers
        self.nbytes = sum(a.nbytes for b in buffers for a in b.values() if isinstance(a, np.ndarray)) + \
            sum(x.nbytes for x in self.xs)
        self.cy, refused = None, ""
        # A one-output model returns an array (its CyPlan takes one for out), else a list.
        self.single_output = bool(getattr(model, "_single_output", True)) and len(outputs) == 1
        if kernels.cython_available() and cy_steps and None not in cy_steps:
            from ..kernels import _cy_plan

            cy_x_shapes, cy_out_shapes = ([cy_shapes[0]], [cy_shapes[1]]) if cy_shapes else \
                ([x.shape for x in self.xs], [y.shape for y in self.ys])
            T = self.x.shape[1] if inputs[0].seq and self.x.ndim >= 2 else 1
            try:
                self.cy = _cy_plan.CyPlan(cy_steps, [(tuple(s), x.dtype) for s, x in zip(cy_x_shapes, self.xs)],
                                          [(tuple(s), f.src) for s, f in zip(cy_out_shapes, outputs)], y.dtype,
                                          lock, T, t_generic, self.single_output)
            except ValueError as e:  # a binding the C side refuses: the bound Python calls still run it right
                refused = f" (CyPlan refused: {e})"
        self.route = ("cython-fused: " if self.cy is not None else "python-calls: ") + " → ".join(names) + refused
        self.last_uses = -1  # the cache's second chance (_Caches.trim)
        self.cached = False  # in a thread's ThreadPlans (a dropped plan must not stay its ``fast``)

    def run_calls(self):
        """The Python route on what is in the plan's input buffers: zero the states
        (none for a stream's plan), run every bound call."""
        for s in self.zero:
            s.fill(0)
        for fn, args in self.calls:
            fn(*args)

    def fresh_for(self, model):
        """Whether the plan still binds ``model``'s current weights and backend.
        If so, and the CyPlan stopped only because the epoch moved for another
        model or layer, it is re-armed."""
        if not _same(self.stamp, _stamp(model)):
            return False
        if self.cy is not None and not self.cy.current:
            self.cy.revalidate()
        return True

    def run(self, xs, dests):
        """Run on the inputs ``xs`` into ``dests`` (lists); False (nothing done)
        when the plan does not run those shapes (a T-generic plan's Python calls
        run only its own)."""
        if self.cy is not None and self.cy.run(xs, dests[0] if self.single_output else dests):
            return True
        if any(x.shape != mine.shape for x, mine in zip(xs, self.xs)):
            return False
        for x, mine in zip(xs, self.xs):
            np.copyto(mine, x)
        self.run_calls()
        for dest, y in zip(dests, self.ys):
            np.copyto(dest, y)
        return True


def _stamp(model):
    # The packed tuples themselves, compared by identity: holding them keeps
    # their ids from being reused by a later set_weights's tuples. A wrapper's
    # are its inner layers'.
    return ((config.get_kernels(),) + tuple(owner._packed for owner in model._weight_owner_layers())
            + tuple(layer._states for layer in model.layers if getattr(layer, "stateful", False)))


def _same(a, b):
    return len(a) == len(b) and a[0] == b[0] and all(x is y for x, y in zip(a[1:], b[1:]))


def plannable(model):
    nodes = getattr(model, "_nodes", None)
    if nodes is None:
        return all(_plannable_layer(layer, i == 0, False) for i, layer in enumerate(model.layers))
    # A functional graph: up to 8 inputs and outputs; initial states only into recurrent layers.
    inputs = {id(t) for t in model.inputs}
    return (len(model.inputs) <= 8 and len(model.outputs) <= 8
            and all((not node.states or isinstance(node.layer, (_RNN, Bidirectional)))
                    and _plannable_layer(node.layer, id(node.inputs[0]) in inputs, True)
                    and (len(node.inputs) == 2 if isinstance(node.layer, tuple(_MERGE_LAYERS))
                         else len(node.inputs) == 1)
                    for node in nodes))


def _plannable_layer(layer, reads_input, functional):
    """Whether a plan can bind ``layer`` (an Embedding only on a model input; a
    returned state only in a functional graph, from an unwrapped layer)."""
    if isinstance(layer, tuple(_MERGE_LAYERS)):
        return functional
    if isinstance(layer, Bidirectional):
        return not (layer.stateful or layer.merge_mode is None or (layer.return_state and not functional))
    if isinstance(layer, _RNN):
        return functional or not layer.return_state
    if isinstance(layer, TimeDistributed):
        return isinstance(layer.layer, Dense)
    if isinstance(layer, Embedding):
        return reads_input
    return isinstance(layer, (Dense, Dropout, Masking, Flatten, RepeatVector, Activation))


def flow_seq_T(x_shape, dtype):
    """Whether axis 1 of a plan input of ``x_shape`` is time: (B, T, features),
    or (B, T) ids into an Embedding."""
    return len(x_shape) >= (3 if np.dtype(dtype).kind == "f" else 2)


class _Flow:
    """What the next layer reads: ``y``, whether it is a sequence (rows scale
    with T: ``T``, its length at capacity), ``src``, where the CyPlan finds it
    (("y" | "h" | "c", step) or ("x", input)), and ``keep``, the (B, T) uint8
    mask that comes with it (None: unmasked)."""

    __slots__ = ("y", "seq", "src", "keep", "T", "follows")

    def __init__(self, y, seq, src, keep, follows=True):
        self.y, self.seq, self.src, self.keep = y, seq, src, keep
        self.T = y.shape[1] if seq else 1
        self.follows = follows  # a sequence whose T is the input's (not a RepeatVector's n)


class _Binder:
    """Appends each layer's calls (the Python route: ``calls``, (fn, args)
    pairs) and CyPlan steps (None where a kernel is not a Cython one) and
    route names; ``zero``: the state buffers a call zeroes first."""

    def __init__(self, calls, zero, cy_steps, names, t_generic, stream=False):
        self.calls, self.zero, self.cy_steps, self.names = calls, zero, cy_steps, names
        self.t_generic = t_generic
        self.stream = stream  # a stream's plan: its own state arrays are bound, a stateful layer's are not

    def _step(self, spec, src, tlen, follows=True):
        self.cy_steps.append(None if spec is None else dict(spec, src=src, tlen=tlen, t_follows=follows))
        return ("y", len(self.cy_steps) - 1)

    def bind(self, layer, buffers, flow, first, initial=(), all_outputs=False):
        """The layer's output flow; with ``all_outputs``, the list of them
        (a recurrent layer's returned states after its output). ``initial``:
        the flows of a recurrent layer's initial_state."""
        outs = self._bind(layer, buffers, flow, first, initial)
        return outs if all_outputs else outs[0]

    def _bind(self, layer, buffers, flow, first, initial):
        if initial and not isinstance(layer, (_RNN, Bidirectional)):
            raise _NotPlannable
        if isinstance(layer, Dropout):
            return [flow]
        x = flow.y
        if isinstance(layer, Embedding):
            return [self._embedding(layer, buffers, flow, first)]
        if x.dtype != np.dtype(layer.dtype):
            raise _NotPlannable
        if isinstance(layer, Dense):
            return [self._dense(layer, layer, buffers["y"], flow)]
        if isinstance(layer, TimeDistributed):
            inner = layer.layer
            return [self._dense(layer, inner, buffers["y"].reshape(x.shape[:-1] + (inner.units,)), flow)]
        if isinstance(layer, Masking):
            return [self._masking(layer, buffers, flow)]
        if isinstance(layer, Activation):
            return [self._activation(layer, buffers, flow)]
        if isinstance(layer, Flatten):
            if flow.seq and flow.follows and self.t_generic:
                raise _NotPlannable  # its width would be the call's T
            self.names.append("flatten")
            return [_Flow(x.reshape(x.shape[0], -1), False, flow.src, None)]  # a view: no step
        if isinstance(layer, RepeatVector):
            return [self._repeat(layer, buffers, flow)]
        if isinstance(layer, Bidirectional):
            return self._bidirectional(layer, buffers, flow, initial)
        y, src = self._rnn(layer, buffers, flow, initial)
        self.names.append(layer._cell + ("[initial_state]" if initial else ""))
        seq = bool(layer.return_sequences)
        outs = [_Flow(y, seq, src, flow.keep if seq else None, flow.follows)]
        if layer.return_state:  # the final states, read where the step leaves them
            outs += [_Flow(buffers[n], False, (n, src[1]), None) for n in layer._state_names]
        return outs

    def _dense(self, layer, dense, y, flow):
        x = flow.y
        if x.dtype != np.dtype(dense.dtype):
            raise _NotPlannable
        kernel, bias = dense._packed
        B, C = x.shape[0], x.shape[-1]
        N = x.size // C
        fn = kernels.get_kernel("dense", "forward", None, B)
        args = contract.bind("dense", "forward", y_out=y.reshape(N, dense.units), x=x.reshape(N, C),
                             kernel=kernel, bias=bias, N=N, C=C, F=dense.units,
                             activation=activations.code(dense.activation), use_bias=int(dense.use_bias))
        self.calls.append((fn, args))
        src = self._step(_cy_step("dense", fn, args, y=y, R=N // B, seq_in=flow.seq, seq_out=flow.seq), flow.src,
                         flow.T, flow.follows)
        self.names.append("dense" if layer is dense else "time_distributed(dense)")
        return _Flow(y, flow.seq, src, flow.keep, flow.follows)

    def _rnn(self, layer, buffers, flow, initial=()):
        x = flow.y
        if x.ndim != 3 or not flow.seq or x.dtype != np.dtype(layer.dtype):
            raise _NotPlannable
        if initial and (layer.stateful or len(initial) != len(layer._state_names) or
                        any(f.y.shape != buffers[n].shape or f.y.dtype != buffers[n].dtype
                            for f, n in zip(initial, layer._state_names))):
            raise _NotPlannable  # the general path raises what is wrong
        B = x.shape[0]
        if layer.stateful and not self.stream:  # its carried state, in place, never zeroed (reset_states does)
            if layer._states is None:
                layer._states = [np.zeros((B, layer.units), layer.dtype) for _ in layer._state_names]
            if layer._states[0].shape[0] != B:
                raise _NotPlannable  # the general path raises the batch-size error
            buffers = dict(buffers, **dict(zip(layer._state_names, layer._states)))
        fn = kernels.get_kernel(layer._cell, "forward", None, B)
        args = layer._forward_args(buffers, x, contract.NO_MASK if flow.keep is None else flow.keep)
        for f, n in zip(initial, layer._state_names):  # Keras's initial_state, copied in before the call
            self.calls.append((np.copyto, (buffers[n], f.y)))
        self.calls.append((fn, args))
        init = {"init_" + n: f.src for f, n in zip(initial, layer._state_names)}
        src = self._step(_cy_step(layer._cell, fn, args, seq_in=True, seq_out=bool(layer.return_sequences),
                                  carry_state=bool(layer.stateful), **init), flow.src, flow.T, flow.follows)
        if not layer.stateful and not initial:
            self.zero.extend(buffers[n] for n in layer._state_names)
        y = buffers["y"]
        return (y if layer.return_sequences else y.reshape(B, layer.units)), src

    def merge(self, layer, buffers, flows):
        """A functional graph's merge layer on two earlier steps' outputs of one
        dtype; masks combine as Keras's (one mask, or both the same one)."""
        a, b = flows
        mode = _MERGE_LAYERS[type(layer)]
        if (a.seq != b.seq or a.T != b.T or a.follows != b.follows or a.y.ndim != (3 if a.seq else 2)
                or b.y.ndim != a.y.ndim or a.y.dtype != b.y.dtype or a.y.dtype != np.dtype(layer.dtype)
                or (mode == "concat" and layer._axis(a.y.ndim - 1) != a.y.ndim - 2)
                or (a.keep is not None and b.keep is not None and a.keep is not b.keep)):
            raise _NotPlannable
        y = buffers["y"]
        self.calls.append((_merge, (a.y, b.y, y, mode)))
        src = self._step({"kind": "merge", "y": y, "src2": b.src, "H": a.y.shape[-1], "H2": b.y.shape[-1],
                          "mode": mode, "seq_in": a.seq, "seq_out": a.seq}, a.src, a.T, a.follows)
        self.names.append(type(layer).__name__.lower())
        return _Flow(y, a.seq, src, a.keep if a.keep is not None else b.keep, a.follows)

    def _embedding(self, layer, buffers, flow, first):
        ids = flow.y
        if not first or ids.dtype != np.int64 or (layer.mask_zero and ids.ndim != 2):
            raise _NotPlannable
        (table,) = layer._packed
        y = buffers["y"]
        keep = buffers["mask"].view(np.uint8) if layer.mask_zero else None
        self.calls.append((_embed, (ids, table, y, keep, layer.name)))
        B = ids.shape[0]
        R = ids.size // B // (ids.shape[1] if flow.seq else 1)
        src = self._step({"kind": "embed", "y": y, "table": table, "keep": keep, "R": R,
                          "seq_in": flow.seq, "seq_out": flow.seq}, flow.src, flow.T)
        self.names.append("embedding[mask_zero]" if layer.mask_zero else "embedding")
        return _Flow(y, flow.seq, src, keep)

    def _activation(self, layer, buffers, flow):
        x, y = flow.y, buffers["y"]
        F, code = x.shape[-1], activations.code(layer.activation)
        fn = kernels.get_kernel("activation", "forward")
        self.calls += [(np.copyto, (y, x)), (fn, (y.reshape(-1, F), code))]
        module = sys.modules.get(getattr(fn, "__module__", None))
        pointers = getattr(module, "_activation_pointer_kernels", None)
        R = x.size // x.shape[0] // F // (flow.T if flow.seq else 1)
        src = self._step(None if pointers is None else
                         {"kind": "activation", "y": y, "F": F, "R": R, "activation": code, "kernels": pointers(),
                          "seq_in": flow.seq, "seq_out": flow.seq}, flow.src, flow.T, flow.follows)
        self.names.append("activation")
        return _Flow(y, flow.seq, src, flow.keep, flow.follows)

    def _repeat(self, layer, buffers, flow):
        if flow.seq or flow.y.ndim != 2 or flow.src[0] == "x":
            raise _NotPlannable
        y = buffers["y"]
        self.calls.append((np.copyto, (y, flow.y[:, None, :])))
        src = self._step({"kind": "repeat", "y": y, "seq_in": False, "seq_out": True}, flow.src, layer.n,
                         follows=False)
        self.names.append("repeat_vector")
        return _Flow(y, True, src, None, follows=False)

    def _masking(self, layer, buffers, flow):
        x = flow.y
        if x.ndim != 3 or not flow.seq:
            raise _NotPlannable
        y, keep = buffers["y"], buffers["mask"].view(np.uint8)
        self.calls.append((_mask, (x, y, keep, buffers["mask"], buffers["differs"], layer.mask_value)))
        src = self._step({"kind": "masking", "y": y, "keep": keep, "C": x.shape[2],
                          "mask_value": layer.mask_value, "seq_in": True, "seq_out": True}, flow.src, flow.T,
                         flow.follows)
        self.names.append("masking")
        return _Flow(y, True, src, keep, flow.follows)

    def _bidirectional(self, layer, buffers, flow, initial=()):
        """The merged output, then (return_state) the forward layer's states and the backward one's."""
        sub = [{k[2:]: v for k, v in buffers.items() if k.startswith(p)} for p in ("f/", "b/")]
        n = len(layer.forward_layer._state_names)
        if initial and len(initial) != 2 * n:
            raise _NotPlannable  # the general path raises the count error
        y_f, src_f = self._rnn(layer.forward_layer, sub[0], flow, initial[:n])
        y_b, src_b = self._rnn(layer.backward_layer, sub[1], flow, initial[n:])
        seq = bool(layer.return_sequences)
        y = buffers["y"]
        self.calls.append((_merge, (y_f, y_b[:, ::-1] if seq else y_b, y, layer.merge_mode)))
        src = self._step({"kind": "merge", "y": y, "src2": src_b, "H": y_f.shape[-1], "mode": layer.merge_mode,
                          "reverse": seq, "seq_in": seq, "seq_out": seq}, src_f, flow.T, flow.follows)
        self.names.append(f"bidirectional({layer.forward_layer._cell}, {layer.merge_mode})"
                          + ("[initial_state]" if initial else ""))
        outs = [_Flow(y, seq, src, flow.keep if seq else None, flow.follows)]
        if layer.return_state:
            for sub_buffers, (_, step) in ((sub[0], src_f), (sub[1], src_b)):
                outs += [_Flow(sub_buffers[n], False, (n, step), None) for n in layer.forward_layer._state_names]
        return outs


# The Python route's steps for the layers that are not kernel calls (the
# CyPlan runs the same in C: src/_plan.pyx's _embed, _masking, _merge).
def _embed(ids, table, y, keep, name):
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= table.shape[0]:
        raise ValueError(f"Embedding \"{name}\": indices must be in [0, {table.shape[0]}); received values "
                         f"from {lo} to {hi}.")
    np.take(table, ids, axis=0, out=y)
    if keep is not None:
        np.not_equal(ids, 0, out=keep.view(np.bool_))


def _mask(x, y, keep, mask, differs, mask_value):
    np.not_equal(x, mask_value, out=differs)
    np.any(differs, axis=-1, out=mask)
    np.multiply(x, mask[..., None], out=y)


def _merge(a, b, y, mode):
    """Two outputs into y (a Bidirectional's backward one passed reversed in time)."""
    if mode == "concat":
        H = a.shape[-1]
        np.copyto(y[..., :H], a)
        np.copyto(y[..., H:], b)
        return
    with np.errstate(over="ignore", invalid="ignore"):
        _MERGE_UFUNCS[mode](a, b, out=y)
        if mode == "ave":
            np.multiply(y, 0.5, out=y)


_MERGE_UFUNCS = {"mul": np.multiply, "sum": np.add, "ave": np.add, "sub": np.subtract, "max": np.maximum,
                 "min": np.minimum}
# A functional graph's merge layers, as MERGE steps (two inputs; Concatenate on the feature axis).
_MERGE_LAYERS = {Add: "sum", Subtract: "sub", Multiply: "mul", Average: "ave", Maximum: "max", Minimum: "min",
                 Concatenate: "concat"}


def _cy_step(cell, fn, args, **extra):
    """A CyPlan step for a bound call, or None when ``fn`` is not a Cython kernel."""
    pointer_kernels = getattr(sys.modules.get(getattr(fn, "__module__", None)), "_pointer_kernels", None)
    if pointer_kernels is None:
        return None
    return dict(zip(contract.NAMES[(cell, "forward")], args), kind=cell, kernels=pointer_kernels(), **extra)


class _NotPlannable(Exception):
    pass


# Plans of every thread and model share one byte budget (set_plan_cache_bytes):
# a service's pool threads each build plans for the shapes they see, and an
# idle thread's plans would otherwise hold their buffers for the process's life.
_PLAN_CACHE_BYTES = 256 << 20
_PLANS_PER_THREAD = 8


def set_plan_cache_bytes(n):
    """The bytes all cached call plans (every thread's, every model's) may hold
    together; past it the least recently used are released. Default 256 MiB.
    A plan in use is never freed under its caller (it keeps its buffers until
    the call returns). Returns the previous value."""
    global _PLAN_CACHE_BYTES
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"set_plan_cache_bytes: expected a byte count >= 0, got {n!r}.")
    previous, _PLAN_CACHE_BYTES = _PLAN_CACHE_BYTES, n
    _CACHES.trim()
    return previous


def get_plan_cache_bytes():
    return _PLAN_CACHE_BYTES


class ThreadPlans:
    """One thread's plans for one model: ``plans`` {key: Plan}, and ``fast``,
    the CyPlan its last predict ran (``BaseModel.predict`` tries it first)."""

    def __init__(self):
        self.plans = {}
        self.fast = None
        _CACHES.register(self)

    def drop(self, key):
        plan = self.plans.pop(key, None)
        if plan is not None:
            plan.cached = False
            if self.fast is plan.cy:
                self.fast = None


class _Caches:
    """Every ThreadPlans (weakly), and the CLOCK over their plans: a plan whose
    CyPlan ran since the last sweep gets a second chance, others go oldest first."""

    def __init__(self):
        import threading
        import weakref

        self._lock = threading.Lock()
        self._all = weakref.WeakSet()

    def register(self, cache):
        with self._lock:
            self._all.add(cache)

    def total(self):
        with self._lock:
            return sum(p.nbytes for c in list(self._all) for p in list(c.plans.values()))

    def trim(self, keep=None):
        """Release plans until the total fits the budget (``keep``, the plan just
        built, last of all)."""
        with self._lock:
            entries = [(c, k, p) for c in list(self._all) for k, p in list(c.plans.items())]
            if keep is not None and keep.nbytes > _PLAN_CACHE_BYTES:
                for c, k, p in entries:
                    if p is keep:
                        c.drop(k)  # over the budget alone: it runs this call, and is not kept
                return
            total = sum(p.nbytes for _, _, p in entries)
            for _ in range(2):  # a second pass takes the plans the first spared
                for c, k, p in entries:
                    if total <= _PLAN_CACHE_BYTES:
                        return
                    if p is keep or c.plans.get(k) is not p:
                        continue
                    uses = p.cy.uses if p.cy is not None else 0
                    if uses != p.last_uses:  # ran since the last sweep: a second chance
                        p.last_uses = uses
                        continue
                    c.drop(k)
                    total -= p.nbytes


_CACHES = _Caches()


def _after_fork_in_child():
    # A fork while another thread held the registry's lock would leave the
    # child's copy locked for good: the child starts with a fresh one.
    import threading

    _CACHES._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def get_plan(model, cache, arrays):
    """The thread's plan for the inputs ``arrays`` (``cache``: the thread's
    ThreadPlans), built or rebuilt as needed; None when the model needs the
    general path.

    With the Cython kernels, a one-input model's (B, T, ...) plan serves every
    T up to the longest seen for that batch and feature shape (where the model
    leaves T open): a longer T rebuilds it at 1.5x (a workspace grown, not one
    per length). Several inputs: one plan per shapes."""
    x = arrays[0]
    seq = len(arrays) == 1 and flow_seq_T(x.shape, x.dtype)
    generic = (seq and model.input_shape[1] is None  # a model declaring its T runs only that T
               and kernels.cython_available() and config.get_kernels() != "numba")
    if generic:
        key = (x.shape[0], x.shape[2:], x.dtype.str, "T")
    else:
        key = tuple((a.shape, a.dtype.str) for a in arrays)
    plans = cache.plans
    # Taken out while it is checked, then put back last (most recently used): another
    # thread's _Caches.trim may drop this thread's plans at any point between two lines.
    plan = plans.pop(key, None)
    if plan is not None and plan.fresh_for(model) and (not generic or plan.x.shape[1] >= x.shape[1]):
        plans[key] = plan
        plan.cached = True
        return plan
    if plan is not None:  # stale, or too short: released (its capacity still sizes the next one)
        plans[key] = plan
        cache.drop(key)
    if not plannable(model):
        return None
    shapes = [a.shape for a in arrays]
    if generic:
        T = x.shape[1]
        if plan is not None and plan.x.shape[1] < T:
            T = max(T, -(-plan.x.shape[1] * 3 // 2 // 16) * 16)
        shapes = [(x.shape[0], T) + x.shape[2:]]
    # Built under the model's weights lock, so a plan never binds a half-done
    # set_weights (some layers new, some old); it then runs on what it bound.
    with model._weights_lock:
        try:
            plan = Plan(model, shapes, [a.dtype for a in arrays], t_generic=generic)
        except _NotPlannable:
            return None
    while len(plans) >= _PLANS_PER_THREAD:
        oldest = next(iter(plans), None)
        if oldest is None:
            break
        cache.drop(oldest)
    plans[key] = plan
    plan.cached = True
    _CACHES.trim(keep=plan)
    return plan
