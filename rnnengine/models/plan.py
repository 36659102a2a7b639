"""Call plans: a Sequential model's kernel calls with every argument bound once.

For the common inference stack (SimpleRNN, LSTM, GRU, Dense, Dropout, no
masks, no stateful layers) everything a call passes to the kernels is fixed
per (batch, input shape, dtype): the workspace buffers, the weights, the dims,
the activation codes. A ``Plan`` binds those argument tuples once; a call then
copies its input into the plan's input buffer, zeroes the states, runs
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
import sys

import numpy as np

from .. import config, kernels
from ..kernels import contract
from ..layers import activations
from ..layers.core import Dense, Dropout
from ..layers.recurrent import _RNN


class Plan:
    """``states``: for a stream, {layer index: [h] or [h, c]}, the arrays that
    carry the state from call to call (bound in place of the workspace's, and
    not zeroed); ``cy_shapes``: the input and output shapes the CyPlan checks
    (a stream steps (B, features) into the (B, 1, features) buffers)."""

    def __init__(self, model, x_shape, dtype, states=None, cy_shapes=None, lock=None):
        B = x_shape[0]
        self.ws = model._make_workspace((B, (tuple(x_shape[1:]), np.dtype(dtype).str)))
        self.x = np.zeros(x_shape, dtype)
        self.stamp = _stamp(model)
        self.calls, self.zero, cy_steps = [], [], []
        y = self.x
        for i, (layer, buffers) in enumerate(zip(model.layers, self.ws.layer_buffers)):
            if states is not None and i in states:
                buffers = dict(buffers, **dict(zip(layer._state_names, states[i])))
            y = _bind(layer, buffers, y, self.calls, self.zero if states is None else [], cy_steps)
        self.y = y
        self.cy = None
        if kernels.cython_available() and cy_steps and None not in cy_steps:
            from ..kernels import _cy_plan

            cy_x_shape, cy_out_shape = cy_shapes or (x_shape, y.shape)
            self.cy = _cy_plan.CyPlan(cy_steps, tuple(cy_x_shape), tuple(cy_out_shape), dtype, lock)

    def fresh_for(self, model):
        """Whether the plan still binds ``model``'s current weights and backend.
        If so, and the CyPlan stopped only because the epoch moved for another
        model or layer, it is re-armed."""
        if not _same(self.stamp, _stamp(model)):
            return False
        if self.cy is not None and not self.cy.current:
            self.cy.revalidate()
        return True

    def run(self, x, dest):
        if self.cy is not None and self.cy.run(x, dest):
            return
        np.copyto(self.x, x)
        for s in self.zero:
            s.fill(0)
        for fn, args in self.calls:
            fn(*args)
        np.copyto(dest, self.y)


def _stamp(model):
    # The packed tuples themselves, compared by identity: holding them keeps
    # their ids from being reused by a later set_weights's tuples.
    return (config.get_kernels(),) + tuple(getattr(layer, "_packed", None) for layer in model.layers)


def _same(a, b):
    return len(a) == len(b) and a[0] == b[0] and all(x is y for x, y in zip(a[1:], b[1:]))


def plannable(model):
    for layer in model.layers:
        if isinstance(layer, _RNN):
            if layer.stateful or layer.return_state:
                return False
        elif not isinstance(layer, (Dense, Dropout)):
            return False
    return True


def _bind(layer, buffers, x, calls, zero, cy_steps):
    """Append ``layer``'s kernel call on input ``x`` (and its CyPlan step, or
    None where the kernel is not a Cython one); return its output buffer."""
    if isinstance(layer, Dropout):
        return x
    if x.dtype != np.dtype(layer.dtype):
        raise _NotPlannable
    B = x.shape[0]
    if isinstance(layer, Dense):
        kernel, bias = layer._packed
        y = buffers["y"]
        C = x.shape[-1]
        N = x.size // C
        fn = kernels.get_kernel("dense", "forward", None, B)
        args = contract.bind("dense", "forward", y_out=y.reshape(N, layer.units), x=x.reshape(N, C),
                             kernel=kernel, bias=bias, N=N, C=C, F=layer.units,
                             activation=activations.code(layer.activation), use_bias=int(layer.use_bias))
        calls.append((fn, args))
        cy_steps.append(_cy_step("dense", fn, args, y=y, R=N // B))
        return y
    fn = kernels.get_kernel(layer._cell, "forward", None, B)
    args = layer._forward_args(buffers, x, contract.NO_MASK)
    calls.append((fn, args))
    cy_steps.append(_cy_step(layer._cell, fn, args))
    zero.extend(buffers[n] for n in layer._state_names)
    y = buffers["y"]
    return y if layer.return_sequences else y.reshape(B, layer.units)


def _cy_step(cell, fn, args, **extra):
    """A CyPlan step for a bound call, or None when ``fn`` is not a Cython kernel."""
    pointer_kernels = getattr(sys.modules.get(getattr(fn, "__module__", None)), "_pointer_kernels", None)
    if pointer_kernels is None:
        return None
    return dict(zip(contract.NAMES[(cell, "forward")], args), kind=cell, kernels=pointer_kernels(), **extra)


class _NotPlannable(Exception):
    pass


def get_plan(model, cache, x):
    """The thread's plan for ``x``'s shape and dtype, built or rebuilt as needed;
    None when the model needs the general path."""
    key = (x.shape, x.dtype.str)
    plan = cache.get(key)
    if plan is not None and plan.fresh_for(model):
        return plan
    if not plannable(model):
        return None
    # Built under the model's weights lock, so a plan never binds a half-done
    # set_weights (some layers new, some old); it then runs on what it bound.
    with model._weights_lock:
        try:
            plan = Plan(model, x.shape, x.dtype)
        except _NotPlannable:
            return None
    if len(cache) >= 8:
        cache.clear()
    cache[key] = plan
    return plan
