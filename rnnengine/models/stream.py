"""Streams: step a model one timestep at a time, the recurrent state kept inside.

    stream = model.stream(batch_size=1)
    for x_t in frames:                  # (features,) or (batch, features)
        y_t = stream.step(x_t)          # the model's output for this step
    snapshot = stream.get_state()       # [[h], [h, c], ...]: one list per recurrent layer
    stream.set_state(snapshot)          # restore (failover, replay)
    stream.reset()                      # zero every state

A stream owns its buffers and its state, so streams are independent of each
other and of ``predict``; one stream is single-owner: using it from two threads
at once (``step``, ``reset``, ``get_state``, ``set_state``) raises
``RuntimeError`` in the thread that came second, and changes nothing.

Many sessions in one call: make one stream with ``batch_size`` = the number of
sessions and pass ``rows=`` (the active sessions' indices) to ``step``: their
states are gathered, stepped together in one kernel call, and scattered back.
With the Cython kernels that is the stream's one fused plan (src/_plan.pyx,
``CyPlan.step``: the rows' states swapped into its first rows and back, no
buffers per row count); the Numba backend keeps a workspace for each of the
last few row counts (``_WORKSPACES``).
"""
import threading

import numpy as np

from .. import _validation
from ..layers.base import bind_call_weights
from ..layers.recurrent import _RNN
from ..layers.wrappers import Bidirectional

_WORKSPACES = 4  # row counts a stream keeps buffers for on the general path


class Stream:
    def __init__(self, model, batch_size=1):
        self.model = model
        self.batch_size = _validation.positive_int(batch_size, "batch_size", "stream")
        self._layers, self._feature_shape = model._stream_plan()
        self._recurrent = [i for i, layer in enumerate(self._layers) if isinstance(layer, _RNN)]
        self._dtype = self._layers[0]._input_dtype()
        self._states = {
            i: [np.zeros((self.batch_size, self._layers[i].units), self._layers[i].dtype)
                for _ in self._layers[i]._state_names]
            for i in self._recurrent
        }
        self._workspaces = {}
        self._busy = threading.Lock()
        self._cy = None  # the fused plan stepping all rows (models/plan.py), once a step has run
        out_shape = model._output_specs([((1,) + self._feature_shape, self._dtype)])[0][0]
        self._out_shape = out_shape[1:] if len(out_shape) >= 2 and out_shape[0] == 1 else out_shape

    def _claim(self, doing):
        """Take the stream for one call, or refuse at once: a stream is single-owner,
        and step, reset, get_state and set_state all read or write its state."""
        if not self._busy.acquire(blocking=False):
            raise RuntimeError(f"This stream cannot be {doing} now: another thread is using it (stepping, "
                               "resetting or reading its state). A stream is single-owner; make one stream "
                               "per thread (they are cheap).")

    def _workspace(self, n):
        ws = self._workspaces.get(n)
        if ws is not None and next(reversed(self._workspaces)) != n:
            del self._workspaces[n]  # to the most recently used end, below
            self._workspaces[n] = ws
        if ws is None:
            while len(self._workspaces) >= _WORKSPACES:
                del self._workspaces[next(iter(self._workspaces))]  # the least recently used
            ws = self.model._make_workspace((n, ((1,) + self._feature_shape, np.dtype(self._dtype).str)))
            ws.x = np.zeros((n, 1) + self._feature_shape, self._dtype)
            ws.rows = np.zeros(n, np.intp)
            # rows=: the named sessions' states, gathered apart from the layer's outputs
            ws.gathered = {i: [np.zeros((n, self._layers[i].units), self._layers[i].dtype)
                               for _ in self._layers[i]._state_names] for i in self._recurrent}
            self._workspaces[n] = ws
        return ws

    def step(self, x_t, rows=None, out=None):
        """Consume one timestep; return the model's output for it.

        Parameters
        ----------
        x_t : array-like, (features,) or (n, features)
            One timestep for ``batch_size`` rows, or for the ``n`` rows named by
            ``rows``. (features,) means one row.
        rows : sequence of int, optional
            Which of the stream's rows (sessions) this step advances; the others
            keep their state. Default: all rows, in order.
        out : ndarray, optional
            Filled with the output (``(n, ...)``) and returned: no allocation.
        """
        x = x_t
        if self._cy is not None:
            if not isinstance(x, np.ndarray):  # a list of frames: as an array it takes the fused step too
                try:
                    x = np.asarray(x)
                except ValueError:
                    x = x_t
                else:
                    if x.dtype.kind in "fiub":
                        x = _validation.cast(x, self._dtype)
            if rows is None:
                y = self._cy.step(x, out)  # None unless x and out are exactly what it was built for
            else:
                r = rows if isinstance(rows, np.ndarray) else np.asarray(rows)
                y = self._cy.step(x, out, r.astype(np.intp, copy=False)) if r.dtype.kind in "iu" else None
            if y is not None:
                return y
        x = np.asarray(x) if not isinstance(x, np.ndarray) else x
        if x.ndim not in (len(self._feature_shape), len(self._feature_shape) + 1):
            raise ValueError(f"stream.step: expected an input of shape {self._feature_shape} or "
                             f"(rows,) + {self._feature_shape}; received {x!r:.80} of shape {x.shape}.")
        single = x.ndim == len(self._feature_shape)
        if single:
            x = x[None]
        n = x.shape[0]
        if rows is None and n != self.batch_size:
            raise ValueError(f"stream.step: expected {self.batch_size} rows (the stream's batch_size) or "
                             f"rows=; received an input of shape {np.shape(x_t)}.")
        x = _validation.as_input_array(x, self._dtype, self._layers[0].name, self._feature_shape, what="Stream input")
        self._claim("stepped")
        try:
            ws = self._workspace(n)
            if rows is not None:
                rows = np.asarray(rows)
                if rows.shape != (n,) or rows.dtype.kind not in "iu":
                    raise ValueError(f"stream.step: rows must be {n} integer indices, one per input row.")
                if n and (rows.min() < 0 or rows.max() >= self.batch_size):
                    raise ValueError(f"stream.step: rows must be in [0, {self.batch_size}).")
                if len(np.unique(rows)) != n:
                    raise ValueError("stream.step: rows must not repeat.")
            plan = getattr(self, "_plan", None)
            if rows is None and plan is not None and plan.cy is None and plan.fresh_for(self.model):
                # The Numba backend's plan: its bound calls, the states in place (no per-step binding).
                np.copyto(plan.x[:, 0], x)
                plan.run_calls()
                y = plan.y
            else:
                np.copyto(ws.x[:, 0], x)
                previous = bind_call_weights(self.model._weights_snapshot())  # one set of weights per step
                try:
                    y = self._run(ws, rows)
                finally:
                    bind_call_weights(previous)
                self._cy = self._fused_plan()
            result = y.reshape((n,) + self._out_shape)
            if out is None:
                out = result.copy()
            else:
                _validation.check_out(out, result.shape[1:] if single else result.shape, result.dtype)
                np.copyto(out, result[0] if single else result)
                return out
            return out[0] if single else out
        finally:
            self._busy.release()

    def _fused_plan(self):
        """A CyPlan stepping every row with the state arrays bound in place, built
        or re-checked against the model's current weights; None where the model
        or the backend has none."""
        from .plan import Plan, _NotPlannable, plannable

        plan = getattr(self, "_plan", None)
        if plan is not None and plan.fresh_for(self.model):
            return plan.cy  # None: these weights and this backend have no fused plan
        if not self.model._has_plans or not plannable(self.model):
            return None
        B = self.batch_size
        with self.model._weights_lock:
            try:
                plan = Plan(self.model, (B, 1) + self._feature_shape, self._dtype, states=self._states,
                            cy_shapes=((B,) + self._feature_shape, (B,) + self._out_shape), lock=self._busy)
            except _NotPlannable:
                return None
        self._plan = plan
        return plan.cy

    def _run(self, ws, rows):
        y, mask = ws.x, None
        for i, (layer, buffers) in enumerate(zip(self._layers, ws.layer_buffers)):
            if i in self._states:
                full = self._states[i]
                if rows is None:
                    states = full
                else:
                    states = [np.take(s, rows, axis=0, out=g) for s, g in zip(full, ws.gathered[i])]
                outs, masks = layer._node_forward(buffers, [y], [mask], states)
                for s, name in zip(full, layer._state_names):
                    if rows is None:
                        np.copyto(s, buffers[name])
                    else:
                        s[rows] = buffers[name]
            else:
                outs, masks = layer._node_forward(buffers, [y], [mask], [])
            y, mask = outs[0], masks[0]
        return y

    def reset(self):
        """Zero every recurrent state. Raises ``RuntimeError`` while another thread uses the stream."""
        self._claim("reset")
        try:
            for states in self._states.values():
                for s in states:
                    s.fill(0)
        finally:
            self._busy.release()

    def get_state(self):
        """A copy of the state: one list per recurrent layer, ``[h]`` or ``[h, c]``, each (batch, units).
        Raises ``RuntimeError`` while another thread uses the stream (a half-stepped state is never read)."""
        self._claim("read")
        try:
            return [[s.copy() for s in self._states[i]] for i in self._recurrent]
        finally:
            self._busy.release()

    def set_state(self, states):
        """Restore a state from ``get_state()`` (validated before anything changes).
        Raises ``RuntimeError`` while another thread uses the stream."""
        states = list(states)
        if len(states) != len(self._recurrent):
            raise ValueError(f"set_state: expected {len(self._recurrent)} layer states, received {len(states)}.")
        checked = []
        for i, layer_states in zip(self._recurrent, states):
            mine = self._states[i]
            layer_states = list(layer_states)
            if len(layer_states) != len(mine):
                raise ValueError(f"set_state: layer \"{self._layers[i].name}\" has {len(mine)} state arrays, "
                                 f"received {len(layer_states)}.")
            name = self._layers[i].name
            for k, (s, new) in enumerate(zip(mine, layer_states)):
                checked.append((s, _validation.state_array(new, s.shape, s.dtype,
                                                           f'set_state: layer "{name}", state {k}')))
        self._claim("restored")
        try:
            for s, new in checked:  # all converted and checked above: this cannot fail half-way
                np.copyto(s, new)
        finally:
            self._busy.release()


def check_streamable(layers):
    """Layers a stream can step: no backward-running recurrence."""
    for layer in layers:
        if isinstance(layer, Bidirectional) or (isinstance(layer, _RNN) and layer.go_backwards):
            raise ValueError(f"Layer \"{layer.name}\" reads its sequence backwards, so it cannot run as a "
                             "stream, one timestep at a time.")
