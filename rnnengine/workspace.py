"""Preallocated buffers: one flat allocation carved into named C-contiguous views.

A ``Workspace`` is built once per (model, batch size, input shape) from a spec
``{name: (shape, dtype)}`` and reused by every call of that shape, as llm.c
allocates its activations once up front, but addressed by name, not position.
Each view starts on a 64-byte boundary so that SIMD loads are aligned.

``WorkspacePool`` hands each in-flight call a workspace no other call holds
(a per-shape free list under a lock held only to pop and push), so one model
can serve many threads without sharing scratch memory.
"""
import threading
from collections import OrderedDict

import numpy as np

_ALIGN = 64


class Workspace:
    def __init__(self, spec):
        offsets, total = {}, 0
        for name, (shape, dtype) in spec.items():
            dtype = np.dtype(dtype)
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            offsets[name] = (total, tuple(int(d) for d in shape), dtype, nbytes)
            total += -(-nbytes // _ALIGN) * _ALIGN
        self._flat = np.zeros(total + _ALIGN, dtype=np.uint8)
        start = -self._flat.ctypes.data % _ALIGN
        self.views = {}
        for name, (offset, shape, dtype, nbytes) in offsets.items():
            raw = self._flat[start + offset:start + offset + nbytes]
            self.views[name] = raw.view(dtype).reshape(shape)
        self.nbytes = total

    def __getitem__(self, name):
        return self.views[name]

    def subset(self, prefix):
        """The views whose names start with ``prefix``, with the prefix removed."""
        n = len(prefix)
        return {k[n:]: v for k, v in self.views.items() if k.startswith(prefix)}


class WorkspacePool:
    """Free lists of workspaces keyed by shape; at most ``max_keys`` shapes kept."""

    def __init__(self, make, max_keys=16):
        self._make = make
        self._free = OrderedDict()
        self._lock = threading.Lock()
        self._max_keys = max_keys

    def acquire(self, key):
        with self._lock:
            free = self._free.get(key)
            if free:
                self._free.move_to_end(key)
                return free.pop()
        return self._make(key)

    def release(self, key, ws):
        with self._lock:
            self._free.setdefault(key, []).append(ws)
            self._free.move_to_end(key)
            while len(self._free) > self._max_keys:
                self._free.popitem(last=False)

    def clear(self):
        with self._lock:
            self._free.clear()
