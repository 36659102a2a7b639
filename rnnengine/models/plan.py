"""Call plans: a Sequential model's kernel calls with every argument bound once.

For the common inference stack (SimpleRNN, LSTM, GRU, Dense, Dropout, no
masks, no stateful layers) everything a call passes to the kernels is fixed
per (batch, input shape, dtype): the workspace buffers, the weights, the dims,
the activation codes. A ``Plan`` binds those argument tuples once; a call then
copies its input into the plan's input buffer, zeroes the states, runs
``fn(*args)`` for each kernel, and copies the output out. That cuts the Python
between ``predict`` and the kernels to a few attribute reads, which is what a
batch-1 call of a small model costs most (see bench/README.md).

A plan is stale when the weights (``layer._packed``) or the kernel backend
(``config.get_kernels()``) change; it is then rebuilt. Plans live per thread
(``threading.local``), so concurrent calls never share buffers. Models a plan
cannot describe fall back to the general path in ``base.py``.
"""
import numpy as np

from .. import config, kernels
from ..layers import activations
from ..layers.core import Dense, Dropout
from ..layers.recurrent import _RNN


class Plan:
    def __init__(self, model, x_shape, dtype):
        B = x_shape[0]
        self.ws = model._make_workspace((B, (tuple(x_shape[1:]), np.dtype(dtype).str)))
        self.x = np.zeros(x_shape, dtype)
        self.stamp = _stamp(model)
        self.calls, self.zero = [], []
        y = self.x
        for layer, buffers in zip(model.layers, self.ws.layer_buffers):
            y = _bind(layer, buffers, y, self.calls, self.zero)
        self.y = y

    def run(self, x, dest):
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


def _bind(layer, buffers, x, calls, zero):
    """Append ``layer``'s kernel calls on input ``x``; return its output buffer."""
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
        calls.append((kernels.get_kernel("dense", "forward", None, B), (y.reshape(N, layer.units), x.reshape(N, C), kernel, bias, N, C,
                                       layer.units, activations.code(layer.activation), int(layer.use_bias))))
        return y
    T, C = x.shape[1:]
    fn = kernels.get_kernel(layer._cell, "forward", None, B)
    calls.append((fn, layer._kernel_args(buffers, buffers, x, B, T, C, layer.return_sequences)))
    zero.extend(buffers[n] for n in layer._state_names)
    y = buffers["y"]
    return y if layer.return_sequences else y.reshape(B, layer.units)


class _NotPlannable(Exception):
    pass


def get_plan(model, cache, x):
    """The thread's plan for ``x``'s shape and dtype, built or rebuilt as needed;
    None when the model needs the general path."""
    key = (x.shape, x.dtype.str)
    plan = cache.get(key)
    if plan is not None and _same(plan.stamp, _stamp(model)):
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
