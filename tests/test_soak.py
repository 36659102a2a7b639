"""Soak: long-running streams and predict loops neither leak nor drift.

Per backend, a stream is stepped ``RNNENGINE_SOAK_STEPS`` times (default 50,000;
in cycles of the same 50-step script, reset between cycles, with ``rows=``,
``out=`` and get_state/set_state round trips mixed in) and two models (a
Sequential: call plans; a functional Bidirectional + merge model: the workspace
pool) answer ``RNNENGINE_SOAK_PREDICTS`` predict calls (default 10,000) over
20+ input shapes, more than the per-thread plan cache (8) and the pool (16
shapes) keep, so both are evicted and rebuilt all along.

Checked:
- resident memory (``/proc/self/statm``, after ``gc.collect()`` and glibc's
  ``malloc_trim``) after warm-up and at the end: growth below
  ``RNNENGINE_SOAK_RSS_MB`` (default 2 MB); the number of live Python objects
  is flat too;
- no drift from buffer reuse: every cycle's outputs equal the first cycle's,
  every predict equals the prediction of a freshly built twin model (same
  weights), and the soaked stream's last cycle equals a fresh stream's, all
  with ``np.array_equal``.

Defaults total 100,000 steps and 20,000 predicts over the two backends (~20 s
on 2 busy cores). A long run::

    RNNENGINE_SOAK_STEPS=1000000 RNNENGINE_SOAK_PREDICTS=100000 python -m pytest tests/test_soak.py -q
"""
import ctypes
import gc
import os
import resource
import sys
import time

import numpy as np
import pytest

from rnnengine import layers
from rnnengine.models import Model, Sequential

from ._report import say  # noqa: F401 - a fixture

STEPS = int(os.environ.get("RNNENGINE_SOAK_STEPS", "50000"))
PREDICTS = int(os.environ.get("RNNENGINE_SOAK_PREDICTS", "10000"))
RSS_SLACK = float(os.environ.get("RNNENGINE_SOAK_RSS_MB", "2")) * 2 ** 20
OBJECT_SLACK = 1000
CYCLE = 50
C = 8

try:
    _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):  # not glibc
    _malloc_trim = None


def rss():
    """Resident memory in bytes, after a full collection and (glibc) giving freed heap back.

    Fragmentation is not a leak; trimming keeps it from looking like one."""
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the peak, which must not grow either
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def live_objects():
    gc.collect()
    return len(gc.get_objects())


def _stream_model():
    return Sequential([layers.Input(shape=(None, C)), layers.LSTM(32, return_sequences=True),
                       layers.GRU(16, return_sequences=True, reset_after=False), layers.SimpleRNN(8),
                       layers.Dense(4, activation="softmax")])


def _seq_model():
    return Sequential([layers.Input(shape=(None, C)), layers.LSTM(24, return_sequences=True),
                       layers.GRU(12), layers.Dense(3, activation="softmax")])


def _functional_model():
    x = layers.Input(shape=(None, C))
    a = layers.Bidirectional(layers.GRU(8, return_sequences=True), merge_mode="sum")(x)
    b = layers.LSTM(8)(a)
    c = layers.SimpleRNN(8)(x)
    return Model(x, layers.Dense(3)(layers.Concatenate()([b, c])))


def _twin(make, model):
    twin = make()
    twin.set_weights(model.get_weights())
    return twin


def _randomized(make, rng):
    model = make()
    model.set_weights([(rng.standard_normal(w.shape) * 0.4).astype(w.dtype) for w in model.get_weights()])
    return model


def _cycle_script(rng, batch):
    """One cycle: per step (x_t, rows or None, use out=)."""
    script = []
    for t in range(CYCLE):
        if t % 5 == 3:
            rows = np.array([1, 3])
            script.append((rng.standard_normal((2, C)).astype(np.float32), rows, t % 2 == 0))
        else:
            script.append((rng.standard_normal((batch, C)).astype(np.float32), None, t % 3 == 0))
    return script


def _play_cycle(stream, script, outs):
    """Steps the script; outputs land in ``outs`` (preallocated, one per step)."""
    for (x, rows, use_out), dest in zip(script, outs):
        if use_out:
            stream.step(x, rows=rows, out=dest)
        else:
            dest[...] = stream.step(x, rows=rows)


def test_stream_soak(backend, rng, say):
    model = _randomized(_stream_model, rng)
    batch = 4
    script = _cycle_script(rng, batch)
    stream = model.stream(batch_size=batch)
    outs = [np.empty((len(rows) if rows is not None else batch, 4), np.float32) for _, rows, _ in script]
    first = [np.empty_like(o) for o in outs]
    cycles = max(4, STEPS // CYCLE)
    _play_cycle(stream, script, first)
    for _ in range(3):  # warm-up: every workspace (one per row count) and code path built
        stream.reset()
        _play_cycle(stream, script, outs)
    objects0, rss0, t0 = live_objects(), rss(), time.perf_counter()
    drift = 0
    for c in range(cycles):
        stream.reset()
        if c % 10 == 0:
            _play_cycle(stream, script[:CYCLE // 2], outs)
            snapshot = stream.get_state()
            stream.set_state(snapshot)  # a round trip changes nothing
            _play_cycle(stream, script[CYCLE // 2:], outs[CYCLE // 2:])
        else:
            _play_cycle(stream, script, outs)
        drift += not all(np.array_equal(a, b) for a, b in zip(outs, first))
    elapsed = time.perf_counter() - t0
    rss1, objects1 = rss(), live_objects()
    fresh = _twin(_stream_model, model).stream(batch_size=batch)
    fresh_outs = [np.empty_like(o) for o in outs]
    _play_cycle(fresh, script, fresh_outs)
    steps = cycles * CYCLE
    say(f"[soak] stream/{backend}: {steps} steps in {elapsed:.1f} s ({elapsed / steps * 1e6:.1f} us/step); "
        f"RSS {rss0 / 2 ** 20:.1f} -> {rss1 / 2 ** 20:.1f} MB ({(rss1 - rss0) / 2 ** 10:+.0f} KB); "
        f"live objects {objects0} -> {objects1}; cycles drifting: {drift}")
    assert drift == 0
    assert all(np.array_equal(a, b) for a, b in zip(outs, fresh_outs)), "the soaked stream differs from a fresh one"
    assert rss1 - rss0 < RSS_SLACK, f"RSS grew by {(rss1 - rss0) / 2 ** 20:.2f} MB over {steps} steps"
    assert objects1 - objects0 < OBJECT_SLACK


def _predict_inputs(rng):
    shapes = [(b, t) for t in (3, 6) for b in (1, 2, 3, 5, 8, 13, 21, 32, 33, 40)]
    xs = [rng.standard_normal((b, t, C)).astype(np.float32) for b, t in shapes]
    xs.append(rng.standard_normal((7, 4, C)))  # float64: the cast path
    return xs


def _call(model, x, k, out):
    mode = k % 3
    if mode == 0:
        return model.predict(x)
    if mode == 1:
        return model.predict_on_batch(x)
    return model.predict(x, out=out)


def test_predict_soak(backend, rng, say):
    makers = [_seq_model, _functional_model]
    models = [_randomized(make, rng) for make in makers]
    xs = _predict_inputs(rng)
    outs = [np.empty((x.shape[0], 3), np.float32) for x in xs]
    # Expected: freshly built twins (same weights), one per call mode, never reused for anything else.
    expected = {}
    for m, (make, model) in enumerate(zip(makers, models)):
        for mode in range(3):
            twin = _twin(make, model)
            for i, x in enumerate(xs):
                expected[m, mode, i] = _call(twin, x, mode, np.empty_like(outs[i])).copy()
    schedule = [(m, i) for i in range(len(xs)) for m in range(len(models))]
    for k, (m, i) in enumerate(schedule * 3):  # warm-up: every (model, shape, mode)
        _call(models[m], xs[i], k, outs[i])
    objects0, rss0, t0 = live_objects(), rss(), time.perf_counter()
    mismatches = 0
    n = max(len(schedule), PREDICTS)
    for k in range(n):
        m, i = schedule[k % len(schedule)]
        mode = (k // len(schedule)) % 3
        y = _call(models[m], xs[i], mode, outs[i])
        mismatches += not np.array_equal(y, expected[m, mode, i])
    elapsed = time.perf_counter() - t0
    rss1, objects1 = rss(), live_objects()
    say(f"[soak] predict/{backend}: {n} calls over {len(xs)} shapes x 2 models in {elapsed:.1f} s; "
        f"RSS {rss0 / 2 ** 20:.1f} -> {rss1 / 2 ** 20:.1f} MB ({(rss1 - rss0) / 2 ** 10:+.0f} KB); "
        f"live objects {objects0} -> {objects1}; mismatches: {mismatches}")
    assert mismatches == 0
    assert rss1 - rss0 < RSS_SLACK, f"RSS grew by {(rss1 - rss0) / 2 ** 20:.2f} MB over {n} predicts"
    assert objects1 - objects0 < OBJECT_SLACK


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="Linux /proc")
def test_rss_probe_sees_a_leak():
    """The probe is sensitive enough: holding 4 MB more shows as > 2 MB of growth."""
    before = rss()
    held = np.ones(4 * 2 ** 20, np.uint8)
    after = rss()
    assert after - before > 2 * 2 ** 20
    del held
