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
    (a stream steps (B, features) into the (B, 1, features) buffers);
    ``t_generic``: the CyPlan runs every T up to ``x_shape[1]`` (the Python
    call list, the Numba backend's, runs exactly ``x_shape``)."""

    def __init__(self, model, x_shape, dtype, states=None, cy_shapes=None, lock=None, t_generic=False):
        B = x_shape[0]
        self.ws = model._make_workspace((B, (tuple(x_shape[1:]), np.dtype(dtype).str)))
        self.x = np.zeros(x_shape, dtype)
        self.stamp = _stamp(model)
        self.calls, self.zero, cy_steps, names = [], [], [], []
        y, seq = self.x, self.x.ndim >= 3
        for i, (layer, buffers) in enumerate(zip(model.layers, self.ws.layer_buffers)):
            if states is not None and i in states:
                buffers = dict(buffers, **dict(zip(layer._state_names, states[i])))
            y, seq = _bind(layer, buffers, y, seq, self.calls, self.zero if states is None else [], cy_steps,
                           names)
        self.y = y
        self.nbytes = sum(a.nbytes for buffers in self.ws.layer_buffers for a in buffers.values()
                          if isinstance(a, np.ndarray)) + self.x.nbytes
        self.cy = None
        if kernels.cython_available() and cy_steps and None not in cy_steps:
            from ..kernels import _cy_plan

            cy_x_shape, cy_out_shape = cy_shapes or (x_shape, y.shape)
            self.cy = _cy_plan.CyPlan(cy_steps, tuple(cy_x_shape), tuple(cy_out_shape), dtype, lock,
                                      x_shape[1] if len(x_shape) >= 3 else 1, t_generic)
        self.route = ("cython-fused: " if self.cy is not None else "python-calls: ") + " → ".join(names)
        self.last_uses = -1  # the cache's second chance (_Caches.trim)
        self.cached = False  # in a thread's ThreadPlans (a dropped plan must not stay its ``fast``)

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
        """Run on ``x`` into ``dest``; False (nothing done) when the plan does not
        run that shape (a T-generic plan's Python calls run only its own)."""
        if self.cy is not None and self.cy.run(x, dest):
            return True
        if x.shape != self.x.shape:
            return False
        np.copyto(self.x, x)
        for s in self.zero:
            s.fill(0)
        for fn, args in self.calls:
            fn(*args)
        np.copyto(dest, self.y)
        return True


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


def _bind(layer, buffers, x, seq, calls, zero, cy_steps, names):
    """Append ``layer``'s kernel call on input ``x`` (and its CyPlan step, or
    None where the kernel is not a Cython one); return its output buffer and
    whether that is a sequence (its rows scale with T)."""
    if isinstance(layer, Dropout):
        return x, seq
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
        cy_steps.append(_cy_step("dense", fn, args, y=y, R=N // B, seq_in=seq, seq_out=seq))
        names.append("dense")
        return y, seq
    fn = kernels.get_kernel(layer._cell, "forward", None, B)
    args = layer._forward_args(buffers, x, contract.NO_MASK)
    calls.append((fn, args))
    cy_steps.append(_cy_step(layer._cell, fn, args, seq_in=seq, seq_out=bool(layer.return_sequences)))
    names.append(layer._cell)
    zero.extend(buffers[n] for n in layer._state_names)
    y = buffers["y"]
    return (y, True) if layer.return_sequences else (y.reshape(B, layer.units), False)


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


def get_plan(model, cache, x):
    """The thread's plan for ``x`` (``cache``: the thread's ThreadPlans), built
    or rebuilt as needed; None when the model needs the general path.

    With the Cython kernels, a (B, T, ...) input's plan serves every T up to
    the longest seen for that batch and feature shape (where the model leaves
    T open): a longer T rebuilds it at 1.5x (a workspace grown, not one per
    length)."""
    generic = (x.ndim >= 3 and model._input_shape[0] is None  # a model declaring its T runs only that T
               and kernels.cython_available() and config.get_kernels() != "numba")
    key = (x.shape[0], x.shape[2:], x.dtype.str, "T") if generic else (x.shape, x.dtype.str)
    plans = cache.plans
    plan = plans.get(key)
    if plan is not None and plan.fresh_for(model) and (not generic or plan.x.shape[1] >= x.shape[1]):
        plans[key] = plans.pop(key)  # most recently used last
        return plan
    if not plannable(model):
        return None
    T = x.shape[1] if x.ndim >= 3 else None
    if generic and plan is not None and plan.x.shape[1] < T:
        T = max(T, -(-plan.x.shape[1] * 3 // 2 // 16) * 16)
    shape = (x.shape[0], T) + x.shape[2:] if generic else x.shape
    cache.drop(key)
    # Built under the model's weights lock, so a plan never binds a half-done
    # set_weights (some layers new, some old); it then runs on what it bound.
    with model._weights_lock:
        try:
            plan = Plan(model, shape, x.dtype, t_generic=generic)
        except _NotPlannable:
            return None
    while len(plans) >= _PLANS_PER_THREAD:
        cache.drop(next(iter(plans)))
    plans[key] = plan
    plan.cached = True
    _CACHES.trim(keep=plan)
    return plan
