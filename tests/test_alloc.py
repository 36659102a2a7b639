"""Steady state allocates nothing but the returned array (nothing with ``out=``).

tracemalloc sees NumPy's data allocations (NumPy reports them to it), so the
peak of traced memory during repeated calls bounds what a call allocates.
"""
import tracemalloc

import numpy as np
import pytest

from rnnengine import layers
from rnnengine.models import Sequential

# Python objects a call creates and frees (views, tuples, Numba's argument
# boxing, Cython's memoryview objects: ~5 KB for a GRU's 12 arrays) stay well
# under this; every buffer in these models is far larger (xproj: 180 KB).
SMALL = 16384


def _fill_tuple_free_lists():
    # CPython keeps up to 2000 freed tuples of each length below 20 for reuse,
    # and tracemalloc counts a kept one as live: a call that frees one more
    # tuple than it takes would show as ~200 B "kept" per call until the list
    # is full. Filling the lists first leaves only real allocations.
    held = [tuple(range(n)) for n in range(1, 20) for _ in range(2000)]
    del held


def _peak_during(fn, repeats=20):
    fn()  # warm: compile, build the workspace
    fn()
    _fill_tuple_free_lists()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(repeats):
            fn()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - base, current - base


@pytest.mark.parametrize("cell", ["SimpleRNN", "LSTM", "GRU"])
def test_predict_allocates_only_the_result(backend, rng, cell):
    model = Sequential([layers.Input(shape=(30, 16)),
                        getattr(layers, cell)(64, return_sequences=True),
                        getattr(layers, cell)(64),
                        layers.Dense(32, activation="softmax")])
    x = rng.standard_normal((8, 30, 16)).astype(np.float32)
    result_bytes = 8 * 32 * 4
    peak, kept = _peak_during(lambda: model.predict(x))
    assert peak < result_bytes + SMALL, peak
    assert kept < SMALL, kept  # nothing accumulates across calls

    out = np.empty((8, 32), np.float32)
    peak, kept = _peak_during(lambda: model.predict(x, out=out))
    assert peak < SMALL, peak
    # The workspace for this model is well above SMALL, so a rebuilt one would show.
    assert 8 * 30 * 4 * 64 * 4 > 10 * SMALL


def test_new_shape_builds_one_plan_then_reuses_it_until_weights_change(rng):
    model = Sequential([layers.Input(shape=(None, 4)), layers.LSTM(32)])
    x = rng.standard_normal((5, 12, 4)).astype(np.float32)
    out = np.empty((5, 32), np.float32)
    model.predict(x, out=out)
    plans = model._local.plans.plans
    assert len(plans) == 1
    first = next(iter(plans.values()))
    model.predict(x, out=out)
    assert list(plans.values()) == [first]
    before = out.copy()
    model.set_weights([w * 0.5 for w in model.get_weights()])  # new weights: a stale plan is rebuilt
    model.predict(x, out=out)
    assert len(plans) == 1 and next(iter(plans.values())) is not first
    assert not np.allclose(out, before)


def test_stream_step_with_out_allocates_nothing(backend, rng):
    model = Sequential([layers.Input(shape=(None, 16)), layers.LSTM(64, return_sequences=True),
                        layers.GRU(64), layers.Dense(8)])
    stream = model.stream(batch_size=4)
    x = rng.standard_normal((4, 16)).astype(np.float32)
    out = np.empty((4, 8), np.float32)
    peak, kept = _peak_during(lambda: stream.step(x, out=out), repeats=50)
    assert peak < SMALL, peak
    assert kept < SMALL, kept
